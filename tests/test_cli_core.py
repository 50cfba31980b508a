from conftest import run_cli


def test_layers_vgg16_lists_relu4_3_with_512_channels():
    result = run_cli("layers", "vgg16")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if " relu4_3 " in line)
    assert "512" in row


def test_layers_vgg19_and_resnet18():
    assert "relu5_4" in run_cli("layers", "vgg19").stdout
    assert "layer3.1.relu" in run_cli("layers", "resnet18").stdout


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    for args in (("layers", "vgg17"), ("layers", "vgg16", "--weights", str(tmp_path / "x.pth")), ("nosuchcommand",)):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr


def test_models_lists_offline_weights():
    result = run_cli("models")
    assert result.returncode == 0
    assert any("vgg16" in line and "bundled" in line for line in result.stdout.splitlines())
