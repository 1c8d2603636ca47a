"""How strongly DM's term and the attention term pull on a set at the start of refine: the a-priori weight.

    python benchmarks/matching_scale.py --data runs/cpu-cifar10/cifar10/dataset \
        --set runs/cpu-cifar10/cifar10/ipc10/seed3407/sample-gan+confidence+coverage

`refine.attention` weighs DataDAM's spatial attention matching against DM's class-mean term, whose scale depends
on the embedding network and the data. Like distill's balanced λ, the weight is set before any accuracy is
seen: the ratio of the two terms' gradient norms on the set's pixels (attention at weight 1), under `--nets`
freshly initialised embedding networks and real batches of the training split (never val or test), with the
refine's own augmentation. A weight equal to the median ratio makes the two pulls equal at step 0. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from skdd.augment import DiffAug, dsa_strategy_for
from skdd.data.batches import Pixels
from skdd.matching import dm_loss
from skdd.models import create_model
from skdd.stages.common import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the real dataset artifact (its training split)")
    ap.add_argument("--set", required=True, help="the fixed set refine starts from")
    ap.add_argument("--arch", default="convnet3")
    ap.add_argument("--width", type=int, default=64, help="refine.embed_width")
    ap.add_argument("--real-per-class", type=int, default=64, help="refine.real_per_class")
    ap.add_argument("--nets", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    real = load_dataset(args.data, splits=("train",))
    syn = load_dataset(args.set, splits=("train",)).train
    pixels = Pixels(real.info["mean"], real.info["std"], "cpu")
    aug = DiffAug(dsa_strategy_for(real.name), "dsa")
    c, h, _ = real.train.shape
    by_class = [torch.nonzero(real.train.labels == k).flatten() for k in range(real.train.num_classes)]
    torch.manual_seed(args.seed)
    rows = []
    for _ in range(args.nets):
        idx = torch.cat([i[torch.randint(i.numel(), (args.real_per_class,))] for i in by_class])
        net = create_model(args.arch, in_channels=c, num_classes=real.train.num_classes, image_size=h,
                           width=args.width).requires_grad_(False)
        x = pixels.classifier(syn.images).requires_grad_(True)
        r = pixels.classifier(real.train.images[idx])
        state = torch.get_rng_state()            # both losses see the same augmentation draw
        dm = dm_loss(net.embed, r, real.train.labels[idx], x, syn.labels, real.train.num_classes, aug)
        g_dm = torch.autograd.grad(dm, x)[0]
        torch.set_rng_state(state)
        both = dm_loss(net.embed, r, real.train.labels[idx], x, syn.labels, real.train.num_classes, aug,
                       attention=1.0, blocks=net)
        g_att = torch.autograd.grad(both, x)[0] - g_dm
        rows.append({"dm": float(dm.detach()), "attention": float((both - dm).detach()), "grad_dm": float(g_dm.norm()),
                     "grad_attention": float(g_att.norm()), "ratio": float(g_dm.norm() / g_att.norm())})
    print(json.dumps({"arch": args.arch, "width": args.width, "nets": rows,
                      "median_ratio": statistics.median(r["ratio"] for r in rows)}, indent=1))


if __name__ == "__main__":
    main()
