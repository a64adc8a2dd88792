"""The CILRS network against the published structure (Codevilla et al. 2019, coiltraine's configuration)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from sd_trainer.config import BRANCH_NAMES, ROAD_OPTION_TO_BRANCH, LossConfig, ModelConfig, TrainConfig
from sd_trainer.model import CILRS
from sd_trainer.resnet import PretrainedWeightsError, build_resnet, load_torchvision_state_dict

TINY = ModelConfig(backbone="resnet18", base_width=8)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("name", "torchvision_count"), [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)])
def test_resnet_parameter_counts_equal_torchvision(name, torchvision_count):
    # torchvision's published counts for its 1000-class networks; built on the meta device (no memory).
    with torch.device("meta"):
        net = build_resnet(name, num_outputs=1000)
    assert _count(net) == torchvision_count


def test_resnet_parameter_names_are_torchvision_names():
    with torch.device("meta"):
        names = set(build_resnet("resnet34").state_dict())
        names50 = set(build_resnet("resnet50").state_dict())
    for expected in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.2.bn2.bias",
                     "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var", "layer4.2.conv2.weight",
                     "fc.weight", "fc.bias"):
        assert expected in names
    assert "layer1.0.downsample.0.weight" not in names  # ResNet-34's first stage keeps its width
    assert {"layer1.0.conv3.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.weight"} <= names50
    assert len([n for n in names if n.endswith(".weight") and "conv" in n]) == 1 + 2 * (3 + 4 + 6 + 3)


def linear(seq: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in seq if isinstance(m, nn.Linear)]


def dropouts(seq: nn.Module) -> list[float]:
    return [m.p for m in seq if isinstance(m, nn.Dropout)]


def test_published_cilrs_structure():
    cfg = TrainConfig().model
    assert cfg.backbone == "resnet34" and cfg.perception_features == 512 and cfg.speed_factor_mps == 12.0
    with torch.device("meta"):
        model = CILRS(cfg)
    assert model.perception.fc.out_features == 512
    assert linear(model.measurements) == [(1, 128), (128, 128)]
    assert linear(model.join) == [(512 + 128, 512)]
    assert len(model.branches) == len(BRANCH_NAMES) == 4
    for branch in model.branches:
        assert linear(branch) == [(512, 256), (256, 256), (256, 3)]
        assert dropouts(branch) == [0.0, 0.5]
        assert not isinstance(branch[-1], nn.ReLU)  # outputs are unbounded controls
    assert linear(model.speed_branch) == [(512, 256), (256, 256), (256, 1)]  # reads the 512 perception features
    assert dropouts(model.speed_branch) == [0.0, 0.5]
    loss = LossConfig()
    assert (loss.kind, loss.branch_weight, loss.speed_weight) == ("l1", 0.95, 0.05)
    assert (loss.steer_weight, loss.throttle_weight, loss.brake_weight) == (0.5, 0.45, 0.05)
    assert ROAD_OPTION_TO_BRANCH == {4: 0, 5: 0, 6: 0, 1: 1, 2: 2, 3: 3}
    assert BRANCH_NAMES == ("follow", "left", "right", "straight")


def test_speed_branch_reads_the_image_not_the_measured_speed():
    torch.manual_seed(0)
    model = CILRS(TINY).eval()
    image = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        a = model(image, torch.tensor([1.0, 2.0]))
        b = model(image, torch.tensor([9.0, 15.0]))
        c = model(torch.flip(image, dims=[3]), torch.tensor([1.0, 2.0]))
    assert torch.equal(a.speed_mps, b.speed_mps)  # measured speed does not reach the speed branch
    assert not torch.allclose(a.branches, b.branches)  # but it reaches the control branches
    assert not torch.allclose(a.speed_mps, c.speed_mps)
    assert torch.allclose(a.speed_mps, a.speed_normalized * 12.0)


def test_forward_shapes_select_and_input_dtypes():
    torch.manual_seed(0)
    model = CILRS(TINY).eval()
    image = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    speed = torch.tensor([0.0, 5.0, 10.0])
    with torch.no_grad():
        out = model(image, speed)
        as_float = model(image.float() / 255.0, speed)
    assert out.branches.shape == (3, 4, 3) and out.speed_mps.shape == (3,)
    assert torch.allclose(out.branches, as_float.branches, atol=1e-5)
    picked = out.select(torch.tensor([2, 0, 3]))
    assert torch.equal(picked, torch.stack([out.branches[0, 2], out.branches[1, 0], out.branches[2, 3]]))
    # ImageNet normalisation inside: a mid-grey picture is near zero after it
    grey = model.normalize(torch.full((1, 3, 2, 2), 118, dtype=torch.uint8))
    assert grey.abs().max() < 0.3


def test_torchvision_state_dict_loads_by_name_and_skips_a_different_fc(tmp_path: Path):
    torch.manual_seed(1)
    source = build_resnet("resnet18", num_outputs=1000, base_width=8)  # a torchvision-format 1000-class file
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = CILRS(dataclasses.replace(TINY, pretrained_path=str(path)))
    assert model.pretrained_report.skipped_shape == ("fc.weight", "fc.bias")
    assert torch.equal(model.perception.layer3[1].conv2.weight,
                       source.layer3[1].conv2.weight)
    assert torch.equal(model.perception.bn1.running_var, source.bn1.running_var)
    assert model.perception.fc.out_features == 512


def test_pretrained_file_that_does_not_fit_is_named(tmp_path: Path):
    state = build_resnet("resnet18", base_width=8).state_dict()
    del state["layer2.0.downsample.0.weight"]
    state["head.extra"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    net = build_resnet("resnet18", num_outputs=512, base_width=8)
    with pytest.raises(PretrainedWeightsError, match=r"layer2\.0\.downsample\.0\.weight.*head\.extra"):
        load_torchvision_state_dict(net, path)
    with pytest.raises(PretrainedWeightsError, match="never downloaded"):
        load_torchvision_state_dict(net, tmp_path / "absent.pth")
    wrong = build_resnet("resnet34", base_width=8).state_dict()
    torch.save(wrong, path)
    with pytest.raises(PretrainedWeightsError, match="unexpected"):
        load_torchvision_state_dict(net, path)
