"""What the gallery page says about each section: the method in a few sentences, its formula, its papers
and what to look for in the grids."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Section:
    """One section of the page (one analyzer)."""

    title: str
    papers: tuple[str, ...]
    formula: str
    text: str
    look_for: str


SECTIONS: dict[str, Section] = {
    "saliency": Section(
        title="Saliency maps",
        papers=(
            "Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks",
            "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks (deconvnet)",
            "Springenberg et al. 2015, Striving for Simplicity (guided backpropagation)",
            "Smilkov et al. 2017, SmoothGrad",
            "Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks (integrated gradients)",
            "Selvaraju et al. 2017, Grad-CAM",
        ),
        formula="M(x) = max over colours |∂S_c/∂x|;   Grad-CAM = ReLU(Σ_k α_k A^k),  α_k = mean over positions of ∂S_c/∂A^k",
        text="Which pixels of a photo the class score S_c of EfficientNet-Lite0 (its most probable class) depends on. "
             "Backprop is the signed gradient (grey is zero) and Simonyan et al.'s map its magnitude. Deconvnet and "
             "guided backprop pass only positive gradients back through each ReLU; guided backprop also blocks them "
             "where the forward input was negative. SmoothGrad averages the map over noisy copies of the photo, "
             "integrated gradients along a path from black. Grad-CAM weighs the last 7×7 layer's channels by their "
             "mean gradient: it says where, coarsely; guided Grad-CAM keeps the guided edges inside that region. "
             "Occlusion needs no gradient: it slides a grey window over the photo and maps how far the score drops. "
             "The second grid shows deconvnet and guided backprop on VGG-16 (with its bundled classifier head).",
        look_for="Guided backprop draws the object's outlines (the cat's eyes and whiskers, the cup's rim); Grad-CAM "
                 "and occlusion light the object, not the background. Deconvnet ignores the forward pass except at "
                 "max-pooling, which EfficientNet lacks: its map is the same stride pattern for every photo, while on "
                 "VGG-16 the pooling switches make it follow each photo.",
    ),
    "trust": Section(
        title="Can you trust the map?",
        papers=(
            "Adebayo et al. 2018, Sanity Checks for Saliency Maps",
            "Petsiuk, Das & Saenko 2018, RISE (deletion and insertion)",
            "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks (occlusion)",
        ),
        formula="ρ_k = Spearman(|M_θ(x)|, |M_θ_k(x)|), θ_k: the top k blocks re-initialised;   "
                "AUC_del = ∫₀¹ p_c(x with the top share t of pixels blurred) dt",
        text="A saliency map should explain the model, so it must change when the model does. The randomization "
             "grid re-initialises EfficientNet-Lite0 block by block from the logits down (a column per shown step, "
             "captioned with the map's rank correlation ρ and SSIM to the original) and redraws each map; the "
             "similarity plot follows ρ and SSIM over every step. The deletion and insertion plot blurs the "
             "photo's pixels in the order each map ranks them (deletion: the class probability should fall fast) "
             "or restores them into the blurred photo (insertion: it should rise fast), against a random order.",
        look_for="Guided backprop keeps drawing the same eyes and whiskers (ρ near 1) until the middle blocks are "
                 "random, as Adebayo et al. found: it shows the photo more than the model. The plain gradient and "
                 "integrated gradients change at the first step, SmoothGrad and Grad-CAM soon after; a fully random "
                 "Grad-CAM covers everything. In the curves, Grad-CAM, occlusion and SmoothGrad restore the class "
                 "fastest (the largest insertion areas); for deletion a random order of scattered blurred pixels "
                 "is hard to beat, so read the two together.",
    ),
    "ascent": Section(
        title="Gradient ascent and feature visualization",
        papers=(
            "Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks (class models)",
            "Yosinski et al. 2015, Understanding Neural Networks Through Deep Visualization (blur, clipping, jitter)",
            "Olah, Mordvintsev & Schubert 2017, Feature Visualization (Distill: Fourier and colour parameterization, "
            "transformation robustness)",
        ),
        formula="x* = argmax_x  S(x) − λ‖x‖²;   Fourier rows: x = σ(C · F⁻¹(ŝ / f)), S averaged over random pad, shift, zoom, turn",
        text="An image that maximises a class score of EfficientNet-Lite0, or one channel of VGG-16 (conv4_3 is "
             "the pre-activation of relu4_3). In the regularizer grids the pixels climb from the zero image, and "
             "the regularizers come on row by row: Simonyan et al.'s L2 penalty, then Yosinski et al.'s Gaussian "
             "blur every few steps, clipping of weak pixels, and random shifts (jitter). The parameterization grids "
             "change what is optimised instead: the pixels with L2 and blur; a spectrum ŝ scaled by 1/frequency "
             "(fft); the same with decorrelated colours C under a sigmoid (one parameter per principal colour "
             "axis); and that with random pad, shift, zoom and turn before every step (Olah et al.'s recipe, with "
             "Lucid's black fill where the picture moves away).",
        look_for="Pixel ascent raises the score through high-frequency patterns nobody would recognise; the "
                 "regularizers bring out larger structures (cup rims for espresso). The Fourier rows are smoother "
                 "and more colourful, and with the transforms the class appears as objects: cups, cat faces, "
                 "orange fish, glowing peaks. VGG-16's channels grow from textures (conv3_3) to patterns and parts "
                 "such as eyes (conv5_3).",
    ),
    "patches": Section(
        title="Maximally activating patches",
        papers=(
            "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
            "Springenberg et al. 2015, Striving for Simplicity (guided backpropagation)",
        ),
        formula="the top positions (image, y, x) of A_c over the image set;  patch = that unit's receptive field",
        text="For each channel c, the spots in the bundled images (each at two sizes) where it fires most, distinct "
             "spots only. Each patch is its unit's exact receptive field, grey beyond the image border, with the "
             "unit's guided-backprop map beside it: which pixels of the patch drive it.",
        look_for="VGG-16's relu2_2 channels pick colours, oriented edges and gratings; relu4_3 channels textures and "
                 "parts (rims, eyes, stripes). EfficientNet-Lite0's block3_2 has the same stride (8 px), but its "
                 "guided maps fill only the middle of each field: the effective receptive field is much smaller "
                 "than the exact one.",
    ),
    "invert": Section(
        title="Feature inversion",
        papers=("Mahendran & Vedaldi 2015, Understanding Deep Image Representations by Inverting Them",),
        formula="x* = argmin_x  ‖Φ_l(x) − Φ_l(x₀)‖² / ‖Φ_l(x₀)‖²  +  λ_TV R_TV^β(x)",
        text="The image whose VGG-16 features at one layer Φ_l match those of the photo x₀, found from noise by "
             "L-BFGS, with a total-variation prior R_TV that keeps it smooth. One cell per ReLU layer, one row per "
             "block; the caption gives the relative feature error reached.",
        look_for="The first blocks give the photo back almost exactly; from block 3 on colours and fine detail go; "
                 "relu4 and relu5 keep only parts and the layout, as in the paper's Figure 6.",
    ),
    "texture": Section(
        title="Texture synthesis",
        papers=("Gatys, Ecker & Bethge 2015, Texture Synthesis Using Convolutional Neural Networks",),
        formula="G^l = F^l F^lᵀ;   L(x) = Σ_l w_l ‖G^l(x) − G^l(s)‖² / (4 N_l² M_l²)",
        text="New images, from noise, whose Gram matrices G^l (the correlations between the channels of VGG-16's "
             "layer l, wherever they occur) match those of the source s, on the layers up to conv1_1, pool1, pool2, "
             "pool3 or pool4.",
        look_for="conv1_1 alone keeps only colours; each deeper set adds larger structures that repeat (brush "
                 "strokes, then whole bricks with their mortar), while their layout stays free, as in the paper's "
                 "Figure 2.",
    ),
    "transfer": Section(
        title="Style transfer",
        papers=("Gatys, Ecker & Bethge 2016, Image Style Transfer Using Convolutional Neural Networks",),
        formula="L(x) = α ‖F^relu4_2(x) − F^relu4_2(p)‖² / 2  +  β Σ_l w_l E_l(Gram of x, Gram of the painting a)",
        text="The content photo p drawn with the Gram matrices of the painting a on relu1_1 … relu5_1, starting from "
             "the photo. The grids sweep the ratio α/β of content to style, the layer the content is matched on, "
             "and the size the painting is read at.",
        look_for="A large α/β keeps the photo, a small one only the painting's strokes. Matching content on deeper "
                 "layers loosens the photo's details; reading the painting larger gives larger brush strokes, as in "
                 "the paper's Figures 4 and 5.",
    ),
}
