"""model_stats: per-unit params and MAdds against hand-computed values."""

import json

import pytest
from cli_runner import run_module

from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.modeling.complexity import compute_stats, summarize
from deeplab_dpc.modeling.model import build_deeplab


@pytest.fixture(scope="module")
def aspp_lite_rows():
    model = build_deeplab(
        "mobilenet_v2",
        21,
        head="aspp",
        atrous_rates=[],
        output_stride=8,
        depth_multiplier=0.5,
    )
    return model, {r["name"]: r for r in compute_stats(model, (257, 257))}


def test_aspp_lite_head_by_hand(aspp_lite_rows):
    _, rows = aspp_lite_rows
    fmap = 33 * 33  # 257 at output stride 8
    assert rows["head/aspp0"] == {
        "name": "head/aspp0",
        "params": 160 * 256,
        "bn_params": 4 * 256,
        "madds": fmap * 160 * 256,
    }
    # Image pooling convolves the 1x1 pooled features only.
    assert rows["head/image_pooling"]["madds"] == 160 * 256
    assert rows["head/concat_projection"]["params"] == 512 * 256
    assert rows["head/concat_projection"]["madds"] == fmap * 512 * 256
    assert rows["logits/semantic"] == {
        "name": "logits/semantic",
        "params": 256 * 21 + 21,
        "bn_params": 0,
        "madds": fmap * 256 * 21,
    }


def test_backbone_rows_by_hand(aspp_lite_rows):
    _, rows = aspp_lite_rows
    assert rows["backbone/Conv"]["params"] == 3 * 3 * 3 * 16
    assert rows["backbone/Conv"]["madds"] == 129 * 129 * 27 * 16
    # Depthwise: 9 weights per channel; the atrous rate changes nothing.
    assert rows["backbone/expanded_conv_16/depthwise"]["params"] == 9 * 480
    assert rows["backbone/expanded_conv_16/depthwise"]["madds"] == 33 * 33 * 9 * 480


def test_rows_cover_every_weight(aspp_lite_rows):
    model, rows = aspp_lite_rows
    total = summarize(list(rows.values()))["total"]
    assert total["params"] + total["bn_params"] == model.count_params()
    assert set(summarize(list(rows.values()))) == {
        "backbone",
        "head",
        "logits",
        "total",
    }


def test_dpc_branch_by_hand_at_1025x2049():
    model = build_deeplab(
        "mobilenet_v2", 19, head="dpc", dpc_spec=spec_lib.TOP1, depth_multiplier=0.5
    )
    rows = {r["name"]: r for r in compute_stats(model, (1025, 2049))}
    fmap = 65 * 129  # output stride 16
    assert rows["head/branch0/depthwise"]["madds"] == fmap * 9 * 160
    assert rows["head/branch1/pointwise"]["params"] == 256 * 256
    assert rows["head/branch1/pointwise"]["madds"] == fmap * 256 * 256
    assert rows["head/concat_projection"]["params"] == 5 * 256 * 256


def _run(*args):
    return run_module("deeplab_dpc.tools.model_stats", *args)


def test_cli_json_rows():
    result = _run(
        "--model_variant=mobilenet_v2",
        "--depth_multiplier=0.5",
        "--dpc_spec=specs/top1.json",
        "--crop_size=129,129",
        "--decoder_output_stride=4",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all(set(r) == {"name", "params", "bn_params", "madds"} for r in rows)
    assert {r["name"].split("/")[0] for r in rows} == {
        "backbone",
        "head",
        "decoder",
        "logits",
    }
    assert "head/branch4/pointwise" in {r["name"] for r in rows}


def test_cli_bad_spec_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"op": "conv", "kernel": 3, "rate": [1, 6], "input": 2}]')
    result = _run(f"--dpc_spec={bad}")
    assert result.returncode == 2
    lines = [
        line
        for line in result.stderr.strip().splitlines()
        if line.startswith("model_stats:")
    ]
    assert len(lines) == 1 and "branch 0" in lines[0] and "input" in lines[0]
