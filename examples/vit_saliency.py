#!/usr/bin/python3
"""Saliency of a torchvision ViT-B/16 prediction, computed by attnroll while
the model runs, written as an overlay on the input image.

    PYTHONPATH=build/python /usr/bin/python3 examples/vit_saliency.py \\
        --server 127.0.0.1:50051 [--image IN.png] [--weights vit_b_16.pth] [--out saliency.png]

Each layer's attention is streamed to attnroll-server during the forward pass
(heads fused on the client: one 197 x 197 matrix per layer on the wire), so the
map is ready when the forward ends. Without --weights the model has random
weights (nothing is downloaded): its query projections are sharpened so the
attention has structure, but the saliency means nothing; pass a state dict of
torchvision's vit_b_16 (e.g. saved from ViT_B_16_Weights.IMAGENET1K_V1 on a
machine that has it) for a real explanation. Without --image a synthetic
picture with a bright square is used.
"""

import argparse
import sys

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw

import attnroll
from attnroll import render
from attnroll.capture import capture_attention

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def build_model(weights=None, seed=0, sharpen=4.0):
    """vit_b_16 in eval mode: the given state dict, or random weights under
    seed with sharpened queries and a random head."""
    torch.manual_seed(seed)
    model = torchvision.models.vit_b_16(weights=None).eval()
    if weights:
        model.load_state_dict(torch.load(weights, map_location="cpu"))
        return model
    with torch.no_grad():
        for block in model.encoder.layers:
            d = block.self_attention.embed_dim
            block.self_attention.in_proj_weight[:d] *= sharpen
            block.self_attention.in_proj_bias[:d] *= sharpen
        head = model.heads.head
        head.weight.normal_(0, 0.02)
        head.bias.normal_(0, 0.02)
    return model


def synthetic_image(size=224):
    """A grey picture with a bright square in its upper right quarter."""
    img = Image.new("RGB", (size, size), (90, 90, 110))
    draw = ImageDraw.Draw(img)
    draw.rectangle([size * 9 // 16, size * 2 // 16, size * 12 // 16, size * 5 // 16],
                   fill=(250, 230, 60))
    return img


def preprocess(img):
    """PIL image -> (the 224 x 224 RGB image, its normalised [1, 3, 224, 224] tensor)."""
    img = img.convert("RGB").resize((224, 224), Image.BILINEAR)
    x = (np.asarray(img, np.float32) / 255.0 - MEAN) / STD
    return img, torch.from_numpy(x.transpose(2, 0, 1).copy())[None]


def explain(model, x, client, **options):
    """(logits, Explanation): one forward with each layer streamed to attnroll."""
    stream = client.stream_pass(len(model.encoder.layers), prefix_tokens=1, grid=(14, 14),
                                **options)
    with torch.no_grad(), capture_attention(model, stream=stream) as cap:
        logits = model(x)
        result = cap.result()
    return logits, result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="attnroll-server address, host:port")
    ap.add_argument("--image", help="input picture (PNG, JPEG); default: a synthetic one")
    ap.add_argument("--weights", help="a state dict of torchvision's vit_b_16")
    ap.add_argument("--out", default="saliency.png", help="the overlay to write")
    ap.add_argument("--colormap", default="inferno")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = build_model(args.weights, args.seed)
    img, x = preprocess(Image.open(args.image) if args.image else synthetic_image())
    with attnroll.Client(args.server, timeout=60) as client:
        try:
            logits, result = explain(model, x, client)
        except attnroll.AttnrollError as e:
            sys.exit("attnroll: %s: %s" % (e.code.name, e.message))
    cls = int(logits[0].argmax())
    saliency = result.map
    render.save_overlay(args.out, saliency, img, alpha=0.6, colormap=args.colormap)
    r, c = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    print("class %d; most salient patch row %d col %d; heads fused on the client: %s; "
          "wrote %s" % (cls, r, c, result.heads_fused_by_client, args.out))


if __name__ == "__main__":
    main()
