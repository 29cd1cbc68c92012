"""What the command line names before anything heavy is imported (``--help`` stays fast):
data set specs, the zoo's architectures (``models.names()`` returns the same list), tasks and
losses (prune/tasks.py's tables), int8 weight-range modes (onnx/quantize.py); a test keeps
them equal."""

SPEC_HELP = ("mnist5k, mnist:DIR, cifar10:DIR, cifar100:DIR, synthetic[:C,H,W,CLASSES], "
             "imagefolder:DIR, npz:FILE, csv:FILE or hf:DIR (options: SPEC?key=value&...)")
ZOO_NAMES = ("lenet300_100", "lenet5", "vgg11", "vgg13", "vgg16", "vgg19", "vgg_like",
             "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18", "resnet34")
TASK_NAMES = ("classification", "token-classification", "regression")
LOSS_NAMES = ("cross-entropy", "mse", "l1", "smooth-l1")
REDUCE_RANGE_MODES = ("auto", "on", "off")
