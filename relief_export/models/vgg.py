"""VGG networks for 32x32 inputs: 3x3 conv + BatchNorm + ReLU stacks, max-pool, small classifier."""

from torch import nn

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
CONFIGS["vgg_like"] = CONFIGS["vgg16"]


class VGG(nn.Module):
    """features (conv stacks) -> flatten -> classifier (512-512-C, or 512-C when ``small_head``)."""

    def __init__(self, config: list[int | str], num_classes: int = 10, in_channels: int = 3,
                 small_head: bool = False) -> None:
        super().__init__()
        self.features = _make_features(config, in_channels)
        head: list[nn.Module] = [nn.Flatten(), nn.Dropout(0.5)]
        if small_head:
            head.append(nn.Linear(512, num_classes))
        else:
            head += [nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(0.5),
                     nn.Linear(512, num_classes)]
        self.classifier = nn.Sequential(*head)

    def forward(self, x):
        return self.classifier(self.features(x))


def _make_features(config: list[int | str], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        assert isinstance(item, int)
        layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1),
                   nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
        channels = item
    return nn.Sequential(*layers)


def vgg(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return VGG(CONFIGS[name], num_classes, in_channels, small_head=name == "vgg_like")
