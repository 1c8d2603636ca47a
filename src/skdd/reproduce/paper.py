"""The paper's numbers and the names and labels the results pages use (the reproduction matrix and its page)."""

# ----------------------------------------------------------------------------------------------- the paper
# Every number of the paper (Li et al., "Generative Dataset Distillation Based on Self-Knowledge Distillation",
# ICASSP 2025; ../shared/paper/), top-1 test accuracy in %, (mean, std) over five trials.
# Keys that are skdd method names are the rows this script measures: cgan-only = the paper's "CGAN", dim-mse =
# "DiM", skd-nostand = "Ours (No Stand.)", skd = "Ours", full = "Original Dataset"; the other rows are kept for
# completeness. The paper's generative rows were evaluated with DiM's protocol (fresh generator samples, best test
# check); the selection rows come from DC (fixed sets).
PAPER: dict[str, dict] = {
    # Table 1: ConvNet-3; MNIST, Fashion-MNIST, CIFAR-10 at IPC 1 / 10 / 50 ("full": the whole training set).
    "table1": {
        "random": {"mnist": {1: (64.9, 3.5), 10: (95.1, 0.9), 50: (97.9, 0.2)},
                   "fashion-mnist": {1: (51.4, 3.8), 10: (73.8, 0.7), 50: (82.5, 0.7)},
                   "cifar10": {1: (14.4, 2.0), 10: (26.0, 1.2), 50: (43.4, 1.0)}},
        "herding": {"mnist": {1: (89.2, 1.6), 10: (93.7, 0.3), 50: (94.8, 0.2)},
                    "fashion-mnist": {1: (67.0, 1.9), 10: (71.1, 0.7), 50: (71.9, 0.8)},
                    "cifar10": {1: (21.5, 1.3), 10: (31.6, 0.7), 50: (40.4, 0.6)}},
        "kcenter": {"mnist": {1: (89.3, 1.5), 10: (84.4, 1.7), 50: (97.4, 0.3)},
                    "fashion-mnist": {1: (66.9, 1.8), 10: (54.7, 1.5), 50: (68.3, 0.8)},
                    "cifar10": {1: (21.5, 1.3), 10: (14.7, 0.9), 50: (27.0, 1.4)}},
        "forgetting": {"mnist": {1: (35.5, 5.6), 10: (68.1, 3.3), 50: (88.2, 1.2)},
                       "fashion-mnist": {1: (42.0, 5.5), 10: (53.9, 2.0), 50: (55.0, 1.1)},
                       "cifar10": {1: (13.5, 1.2), 10: (23.3, 1.0), 50: (23.3, 1.1)}},
        "dc": {"mnist": {1: (91.7, 0.5), 10: (97.4, 0.2), 50: (98.8, 0.2)},
               "fashion-mnist": {1: (70.5, 0.6), 10: (82.3, 0.4), 50: (83.6, 0.4)},
               "cifar10": {1: (28.3, 0.5), 10: (44.9, 0.5), 50: (53.9, 0.5)}},
        "dsa": {"mnist": {1: (88.7, 0.6), 10: (97.8, 0.1), 50: (99.2, 0.1)},
                "fashion-mnist": {1: (70.6, 0.6), 10: (84.6, 0.3), 50: (88.7, 0.2)},
                "cifar10": {1: (28.8, 0.7), 10: (52.1, 0.5), 50: (60.6, 0.5)}},
        "dm": {"mnist": {1: (89.9, 0.8), 10: (97.6, 0.1), 50: (98.6, 0.1)},
               "fashion-mnist": {1: (71.5, 0.5), 10: (83.6, 0.2), 50: (88.2, 0.1)},
               "cifar10": {1: (26.5, 0.4), 10: (48.9, 0.6), 50: (63.0, 0.4)}},
        "cafe": {"mnist": {1: (93.1, 0.3), 10: (97.5, 0.1), 50: (98.9, 0.2)},
                 "fashion-mnist": {1: (73.7, 0.7), 10: (83.0, 0.4), 50: (88.2, 0.3)},
                 "cifar10": {1: (31.6, 0.8), 10: (50.9, 0.5), 50: (62.3, 0.4)}},
        "kip": {"mnist": {1: (90.1, 0.1), 10: (97.5, 0.0), 50: (98.3, 0.1)},
                "fashion-mnist": {1: (70.6, 0.6), 10: (84.6, 0.3), 50: (88.7, 0.2)},
                "cifar10": {1: (49.9, 0.2), 10: (62.7, 0.3), 50: (68.6, 0.2)}},
        "mtt": {"mnist": {1: (91.4, 0.9), 10: (97.3, 0.1), 50: (98.5, 0.1)},
                "fashion-mnist": {1: (75.1, 0.9), 10: (87.2, 0.3), 50: (88.3, 0.1)},
                "cifar10": {1: (46.3, 0.8), 10: (65.3, 0.7), 50: (71.6, 0.2)}},
        "frepo": {"mnist": {1: (93.8, 0.6), 10: (98.4, 0.1), 50: (99.2, 0.1)},
                  "fashion-mnist": {1: (75.6, 0.5), 10: (86.2, 0.3), 50: (89.6, 0.1)},
                  "cifar10": {1: (46.8, 0.7), 10: (65.5, 0.6), 50: (71.7, 0.2)}},
        "cgan-only": {"mnist": {1: (96.1, 0.7), 10: (97.8, 0.3), 50: (98.4, 0.3)},
                      "fashion-mnist": {1: (81.5, 0.5), 10: (84.0, 0.2), 50: (86.3, 0.3)},
                      "cifar10": {1: (46.4, 1.2), 10: (62.7, 0.9), 50: (68.1, 0.8)}},
        "dim-mse": {"mnist": {1: (96.5, 0.6), 10: (98.6, 0.2), 50: (99.2, 0.2)},
                    "fashion-mnist": {1: (84.5, 0.4), 10: (88.2, 0.2), 50: (89.8, 0.1)},
                    "cifar10": {1: (51.3, 1.0), 10: (66.2, 0.5), 50: (72.6, 0.4)}},
        "skd-nostand": {"mnist": {1: (97.3, 0.1), 10: (98.5, 0.2), 50: (99.0, 0.1)},
                        "fashion-mnist": {1: (85.0, 0.2), 10: (88.6, 0.4), 50: (89.5, 0.2)},
                        "cifar10": {1: (51.4, 0.4), 10: (67.3, 0.5), 50: (73.5, 0.3)}},
        "skd": {"mnist": {1: (97.9, 0.2), 10: (98.7, 0.1), 50: (99.1, 0.1)},
                "fashion-mnist": {1: (85.5, 0.4), 10: (89.0, 0.5), 50: (89.8, 0.3)},
                "cifar10": {1: (51.6, 0.5), 10: (68.2, 0.4), 50: (74.0, 0.1)}},
        "full": {"mnist": {"full": (99.6, 0.0)}, "fashion-mnist": {"full": (93.5, 0.1)},
                 "cifar10": {"full": (84.8, 0.1)}},
    },
    # Table 2: cross-architecture, CIFAR-10, IPC 10 (trained on the distilled set, tested per architecture).
    "table2": {
        "dsa": {"convnet3": (52.1, 0.4), "resnet18": (42.8, 1.0), "alexnet": (35.9, 1.3), "vgg11": (43.2, 0.5)},
        "kip": {"convnet3": (47.6, 0.9), "resnet18": (36.8, 1.0), "alexnet": (24.4, 3.9), "vgg11": (42.1, 0.4)},
        "mtt": {"convnet3": (64.3, 0.7), "resnet18": (46.4, 0.6), "alexnet": (34.2, 2.6), "vgg11": (50.3, 0.8)},
        "frepo": {"convnet3": (65.5, 0.4), "resnet18": (57.7, 0.7), "alexnet": (61.9, 0.7), "vgg11": (59.4, 0.7)},
        "dim-mse": {"convnet3": (66.2, 0.5), "resnet18": (69.2, 0.3), "alexnet": (67.3, 0.9), "vgg11": (66.8, 0.5)},
        "skd-nostand": {"convnet3": (67.3, 0.5), "resnet18": (69.6, 0.5), "alexnet": (68.9, 0.7),
                        "vgg11": (68.2, 0.3)},
        "skd": {"convnet3": (68.2, 0.4), "resnet18": (69.9, 0.3), "alexnet": (69.6, 0.3), "vgg11": (69.2, 0.1)},
    },
}

# rows of the Table 1 layout, in the paper's order, with their labels
METHOD_ROWS: list[tuple[str, str]] = [
    ("random", "Random"), ("herding", "Herding"), ("kcenter", "K-Center"),
    ("cgan-only", "CGAN (pretrained GAN, no distillation)"),
    ("gan-only", "GAN-only control (distill loss none, equal steps)"),
    ("skd-nostand", "Ours (No Stand.): skd-nostand"), ("dim-mse", "DiM (MSE matching): dim-mse"),
    ("skd", "Ours: skd"), ("full", "Original Dataset (full)"),
]
CLAIMED_ORDER = ["skd", "skd-nostand", "dim-mse", "cgan-only"]   # the paper's claim, best first
LOSSES = ("skd", "skd-nostand", "dim-mse", "cgan-only")
BASELINES = ("random", "herding", "kcenter", "full")
PROTOCOLS = ("strict", "dim")
DATASET_LABELS = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
PROTOCOL_LABELS = {"strict": "strict (DC/DSA, last epoch)", "dim": "DiM protocol (best test checkpoint)"}
