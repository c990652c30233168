"""Palettes, colourising, panels, and vis output files."""

import keras
import numpy as np
import pytest
from PIL import Image

from deeplab_dpc.data import registry, synthetic
from deeplab_dpc.evaluation import visualizer
from deeplab_dpc.modeling import checkpoints
from deeplab_dpc.modeling.model import build_model, model_config
from deeplab_dpc.reporting import colormaps


def test_palettes_have_the_datasets_colours():
    pascal = colormaps.get_colormap("pascal")
    assert pascal.shape == (256, 3) and pascal.dtype == np.uint8
    assert tuple(pascal[1]) == (128, 0, 0) and tuple(pascal[15]) == (192, 128, 128)
    assert tuple(colormaps.get_colormap("cityscapes")[0]) == (128, 64, 128)
    assert tuple(colormaps.get_colormap("cityscapes")[18]) == (119, 11, 32)
    ade = colormaps.get_colormap("ade20k")
    assert tuple(ade[1]) == (120, 120, 120) and tuple(ade[150]) == (92, 0, 255)
    assert tuple(colormaps.get_colormap("camvid")[0]) == (128, 128, 128)
    info = registry.get_dataset_info("synthetic")
    assert tuple(colormaps.get_colormap("dataset", info)[1]) == tuple(info.colormap[1])
    with pytest.raises(ValueError, match="unknown 'voc'"):
        colormaps.get_colormap("voc")


def test_colorize_and_side_by_side():
    palette = colormaps.get_colormap("pascal")
    label = np.array([[0, 1], [2, 255]])
    rgb = colormaps.colorize(label, palette)
    assert rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 1]) == (128, 0, 0) and tuple(rgb[1, 1]) == tuple(palette[255])
    with pytest.raises(ValueError):
        colormaps.colorize(np.array([[300]]), palette)
    panel = colormaps.side_by_side(rgb, rgb, rgb, gap=4)
    assert panel.shape == (2, 2 * 3 + 8, 3) and (panel[:, 2:6] == 255).all()
    image = colormaps.to_uint8_image(np.array([[[-1.0, 0.0, 1.0]]]))
    assert image.tolist() == [[[0, 128, 255]]]


def test_raw_ids_of_cityscapes_are_label_ids():
    table = visualizer.raw_id_map(registry.get_dataset_info("cityscapes"))
    assert table[0] == 7 and table[18] == 33
    assert visualizer.raw_id_map(registry.get_dataset_info("synthetic"))[3] == 3


def test_visualizer_writes_panels_and_raw_predictions(tmp_path):
    data = str(tmp_path / "synthetic")
    synthetic.generate_synthetic_dataset(
        data, num_train=2, num_val=3, image_size=(65, 65)
    )
    keras.utils.set_random_seed(0)
    config = model_config("mobilenet_v2", 5, head="aspp", depth_multiplier=0.5)
    checkpoints.write_model_checkpoint(build_model(config), config, str(tmp_path / "c"))
    info = registry.get_dataset_info("synthetic")
    count = visualizer.visualize_checkpoints(
        str(tmp_path / "c"), str(tmp_path / "vis"), info, data=data,
        colormap_type="dataset", also_save_raw_predictions=True, max_images=2,
    )  # fmt: skip
    assert count == 2
    out = tmp_path / "vis" / "segmentation_results"
    panels = sorted(out.glob("*_panel.png"))
    assert len(panels) == 2 and len(list(out.glob("*_prediction.png"))) == 2
    panel = np.asarray(Image.open(panels[0]))
    scale = 3  # 65-pixel panels are enlarged to >= 160 pixels for titles
    top = colormaps.PANEL_TITLE_HEIGHT
    assert panel.shape[1] == 3 * 65 * scale + 8
    assert panel.shape[0] > top + 65 * scale  # titles above, legend below
    name = panels[0].name.replace("_panel.png", "")
    raw = np.asarray(
        Image.open(tmp_path / "vis" / "raw_segmentation_results" / f"{name}.png")
    )
    colored = np.asarray(Image.open(out / f"{name}_prediction.png"))
    palette = colormaps.get_colormap("dataset", info)
    assert raw.shape == (65, 65) and raw.max() < 5
    np.testing.assert_array_equal(palette[raw], colored)
    shown = panel[top : top + 65 * scale : scale, -65 * scale :: scale]
    np.testing.assert_array_equal(shown, colored)
    assert not (panel[:top] == 255).all()  # the titles are drawn
    legend = panel[top + 65 * scale :]
    present = np.unique(raw)
    for class_id in present:  # a swatch of every predicted class's colour
        assert (legend == palette[class_id]).all(-1).any(), class_id


def test_legend_lists_the_classes_present_without_the_ignore_label():
    names, palette = ["a", "b", "c"], np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]])
    labels = np.array([[0, 2], [255, 2]])
    entries = colormaps.legend_entries(
        names, palette, labels, np.array([[0, 0]]), ignore_label=255
    )
    assert entries == [("a", (0, 0, 0)), ("c", (0, 255, 0))]


def test_comparison_figure_shows_each_checkpoint_on_the_chosen_images(tmp_path):
    data = str(tmp_path / "synthetic")
    synthetic.generate_synthetic_dataset(
        data, num_train=2, num_val=3, image_size=(65, 65)
    )
    info = registry.get_dataset_info("synthetic")
    palette = colormaps.get_colormap("dataset", info)
    raws = []
    for seed in (0, 1):  # two different models, their own raw predictions
        keras.utils.set_random_seed(seed)
        config = model_config("mobilenet_v2", 5, head="aspp", depth_multiplier=0.5)
        ckpt = str(tmp_path / f"c{seed}")
        checkpoints.write_model_checkpoint(build_model(config), config, ckpt)
        visualizer.visualize_checkpoints(
            ckpt, str(tmp_path / f"vis{seed}"), info, data=data,
            colormap_type="dataset", also_save_raw_predictions=True,
        )  # fmt: skip
        raw_dir = tmp_path / f"vis{seed}" / "raw_segmentation_results"
        raws.append([np.asarray(Image.open(p)) for p in sorted(raw_dir.glob("*.png"))])
    assert len(raws[0]) == 3
    figure = visualizer.comparison_figure(
        [("a", str(tmp_path / "c0")), ("b", str(tmp_path / "c1"))], data, info,
        image_indices=[2, 0],
    )  # fmt: skip
    scale, top, side = 3, colormaps.PANEL_TITLE_HEIGHT, 65 * 3
    assert figure.shape[1] == 4 * side + 3 * 4  # image | truth | a | b
    # The rows follow the split's order (0, then 2); each model's panel is its
    # own prediction of that image, in the dataset's colours.
    row_height = figure.shape[0] // 2
    for row, index in enumerate((0, 2)):
        y = row * row_height + top
        for k in (0, 1):
            x = (2 + k) * (side + 4)
            shown = figure[y : y + side : scale, x : x + side : scale]
            np.testing.assert_array_equal(shown, palette[raws[k][index]])
    with pytest.raises(ValueError, match=r"positions \[0, 7\]"):
        visualizer.comparison_figure([("a", str(tmp_path / "c0"))], data, info,
                                     image_indices=[0, 7])  # fmt: skip
