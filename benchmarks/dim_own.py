"""Seconds per generator step of DiM's own stage-2 code (vimar-gu/DiM `pool_match.train`) on the CPU.

Issue 16's speed target is against DiM's own code, not against `speed.py`'s DiM-style reference loop, so this
runs DiM's `train()` itself, unmodified, on MNIST with the match model fixed to ResNet18 and 16 match-model SGD
steps per generator step (`--epochs-match-train 16`, batch 64, every other argument DiM's default: G/D width 196,
grad matching, 4 DataLoader workers), and times consecutive `optim_g.step()` calls (one G update with its 16 pool
steps plus the D update with gradient penalty that follows). DiM's code is not part of skdd: check it out
yourself (no copy is kept here),

    git clone https://github.com/vimar-gu/DiM /tmp/DiM && git -C /tmp/DiM checkout 18afd956d7e72f630c7f48bf2df9a27ae6a8839c
    OMP_NUM_THREADS=2 python benchmarks/dim_own.py --dim /tmp/DiM --mnist ../shared/datasets/mnist --steps 5 --warmup 1

and time skdd's step in the same sitting (`speed.py --pool resnet18 ...`, docs/results.md). The last stdout line
is JSON. What differs from `python pool_match.py --data mnist` on a GPU, all done from here by monkeypatching:
`.cuda()` is the identity on tensors and modules; `Normalize` is built on the CPU; `define_model` gets
`resnet18` instead of a random choice; no stage-1 checkpoint is loaded (fresh G/D, same shapes and cost); Adam's
betas `(0, 0.9)` are written `(0.0, 0.9)` (torch 2.14 refuses the mixed tuple); matplotlib, which only DiM's
plotting imports, is stubbed when missing; the MNIST idx files are unpacked into a temporary torchvision root so
nothing downloads. The logs folder, stdout Logger, image saving and `validate()` of DiM's main are not run.
"""
import argparse
import gzip
import importlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

from skdd.data.sources import _IDX_STEMS, _find_idx_file

MNIST_FILES = tuple(stem for pair in _IDX_STEMS.values() for stem in pair)


def _unpack_mnist(src: Path, raw: Path) -> None:
    """torchvision's MNIST only skips its download when the unpacked idx files sit in `root/MNIST/raw`."""
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        found = _find_idx_file(src, name)
        if found is None:
            sys.exit(f'dim_own: {name}[.gz] not found in {src}')
        with (gzip.open(found, 'rb') if found.suffix == '.gz' else open(found, 'rb')) as fin, \
                open(raw / name, 'wb') as fout:
            shutil.copyfileobj(fin, fout)


class _StopTiming(Exception):
    """Private exception raised from the optim_g.step wrapper to leave DiM's train()."""


def _install_matplotlib_stub():
    # PATCH 1: DiM's utils.py imports matplotlib (only used by utils.Plotter, never
    # by the training path). It is not installed in this venv, so a stub is
    # injected *only if* the real import fails.
    try:
        importlib.import_module('matplotlib.pyplot')
        return False
    except ImportError:
        pass
    mpl = types.ModuleType('matplotlib')
    mpl.use = lambda *a, **k: None
    plt = types.ModuleType('matplotlib.pyplot')

    def _unavailable(*a, **k):
        raise RuntimeError('matplotlib stub (time_dim.py): plotting is unavailable')
    plt.subplots = _unavailable
    plt.savefig = _unavailable
    plt.close = _unavailable
    mpl.pyplot = plt
    sys.modules['matplotlib'] = mpl
    sys.modules['matplotlib.pyplot'] = plt
    return True


def _dim_parser(pm_module):
    """Rebuild DiM's argparse parser by executing pool_match.py's own
    `parser = ...` ... `add_argument(...)` lines (from its __main__ block),
    so that every default is exactly DiM's."""
    src = open(pm_module.__file__).read()
    start = src.index('    parser = argparse.ArgumentParser()')
    end = src.index('    args = parser.parse_args()')
    block = '\n'.join(line[4:] for line in src[start:end].splitlines())
    ns = {'argparse': argparse, 'str2bool': pm_module.str2bool}
    exec(block, ns)
    return ns['parser']


def main():
    cli = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    cli.add_argument('--steps', type=int, default=5, help='timed generator steps')
    cli.add_argument('--warmup', type=int, default=1, help='untimed generator steps first')
    cli.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    cli.add_argument('--dim', type=Path, required=True, help="a checkout of vimar-gu/DiM (pool_match.py's folder)")
    cli.add_argument('--mnist', type=Path, default=Path('../shared/datasets/mnist'),
                     help='the four MNIST idx files (.gz or not)')
    cli.add_argument('--json', type=Path, help='also write the result here')
    opt = cli.parse_args()
    if not (opt.dim / 'pool_match.py').is_file():
        sys.exit(f'dim_own: no pool_match.py in {opt.dim} (check out vimar-gu/DiM there)')
    with tempfile.TemporaryDirectory(prefix='dim-mnist-') as data_dir:   # removed however the run ends
        _unpack_mnist(opt.mnist, Path(data_dir) / 'MNIST' / 'raw')
        result = _time_dim(opt, data_dir)
    print(json.dumps(result))
    if opt.json:
        opt.json.write_text(json.dumps(result, indent=1) + '\n')


def _time_dim(opt: argparse.Namespace, data_dir: str) -> dict:
    """DiM's `train()` until `opt.warmup + opt.steps` generator steps, with MNIST under `data_dir`."""
    import torch
    import torch.nn as nn
    torch.set_num_threads(opt.threads)

    # ---- CPU / environment patches (listed in the module docstring) -------------------------
    mpl_stubbed = _install_matplotlib_stub()                          # PATCH 1
    torch.Tensor.cuda = lambda self, *a, **k: self                    # PATCH 2 (all tensors already on CPU)
    torch.nn.Module.cuda = lambda self, *a, **k: self                 # PATCH 3

    sys.path.insert(0, str(opt.dim.resolve()))
    import pool_match as pm   # DiM's own module, unmodified
    import utils as dim_utils

    _DimNormalize = dim_utils.Normalize

    def _cpu_normalize(mean, std, device='cpu'):                      # PATCH 4: device='cuda' -> 'cpu'
        return _DimNormalize(mean, std, device='cpu')
    pm.Normalize = _cpu_normalize

    _dim_define_model = pm.define_model

    def _define_model_resnet18(args, num_classes, e_model=None):      # PATCH 5: fixed match model
        if e_model is None:
            e_model = 'resnet18'
        return _dim_define_model(args, num_classes, e_model)
    pm.define_model = _define_model_resnet18

    # ---- DiM's args, exactly as its argparse builds them --------------------
    parser = _dim_parser(pm)
    args = parser.parse_args(['--data', 'mnist',
                              '--batch-size', '64',
                              '--epochs-match-train', '16'])
    args.data_dir = data_dir                                          # PATCH 6: local MNIST root

    # ---- replicate pool_match.py __main__ (minus dirs/Logger/checkpoint) ----
    random.seed(args.seed)
    import numpy as np
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = True

    print(args)

    trainloader, testloader = pm.load_data(args)

    generator = pm.Generator(args).cuda()
    discriminator = pm.Discriminator(args).cuda()

    # PATCH 9: DiM writes betas=(0, 0.9); torch 2.14 rejects a mixed int/float
    # betas tuple ("betas must be either both floats or both Tensors"), so the
    # int 0 is written as 0.0 (numerically identical).
    optim_g = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=(0.0, 0.9))
    optim_d = torch.optim.Adam(discriminator.parameters(), lr=args.lr, betas=(0.0, 0.9))
    # PATCH 7: DiM loads a stage-1 checkpoint here (torch.load(args.weight));
    # none exists, so G/D/optimizers keep their fresh init (same shapes/cost).
    for g in optim_g.param_groups:
        g['lr'] = args.lr
    for g in optim_d.param_groups:
        g['lr'] = args.lr
    criterion = nn.CrossEntropyLoss()

    aug, aug_rand = pm.diffaug(args)

    # ---- timing: wrap optim_g.step -----------------------------------------
    total = opt.warmup + opt.steps
    stamps = []
    _real_step = optim_g.step

    def _timed_step(*a, **k):                                         # PATCH 8: timing wrapper
        out = _real_step(*a, **k)
        stamps.append(time.perf_counter())
        print('[time_dim] generator step {} done at +{:.2f}s'.format(
            len(stamps), stamps[-1] - t0), flush=True)
        if len(stamps) >= total:
            raise _StopTiming()
        return out
    optim_g.step = _timed_step

    epoch = 0
    generator.train()
    discriminator.train()
    t0 = time.perf_counter()
    try:
        pm.train(args, epoch, generator, discriminator, optim_g, optim_d,
                 trainloader, criterion, aug, aug_rand)
    except _StopTiming:
        pass
    else:
        raise RuntimeError('train() returned before {} generator steps'.format(total))

    edges = [t0] + stamps
    per_step = [edges[i + 1] - edges[i] for i in range(len(stamps))]
    warm = per_step[:opt.warmup]
    timed = per_step[opt.warmup:]
    mean = sum(timed) / len(timed) if timed else float('nan')

    return {
        'dim_own_s_per_step': mean,
        'steps': timed,
        'warmup_steps': warm,
        'n_timed': len(timed),
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'omp_num_threads_env': os.environ.get('OMP_NUM_THREADS'),
        'config': {
            'data': args.data, 'batch_size': args.batch_size,
            'match_model': 'resnet18', 'match': args.match, 'metric': args.metric,
            'match_aug': args.match_aug, 'aug_type': args.aug_type,
            'mixup_net': args.mixup_net, 'epochs_match_train': args.epochs_match_train,
            'num_workers': args.num_workers, 'lr': args.lr, 'adam_betas': '(0, 0.9) in DiM; passed as (0.0, 0.9)',
            'eval_lr': args.eval_lr, 'momentum': args.momentum,
            'weight_decay': args.weight_decay, 'dim_noise': args.dim_noise,
            'bias': args.bias, 'fc': args.fc,
            'G_params': sum(p.numel() for p in generator.parameters()),
            'D_params': sum(p.numel() for p in discriminator.parameters()),
        },
        'matplotlib_stubbed': mpl_stubbed,
    }


if __name__ == '__main__':
    main()
