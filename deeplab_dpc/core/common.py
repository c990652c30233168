"""One vocabulary for the whole project: sample keys, prediction keys, constants.

Imitates DeepLab2's `common.py`: every string that crosses a module boundary is
defined once here, so that a typo is an import error and not a silent miss.
"""

# --- Sample keys (what the input pipeline yields) ---------------------------
IMAGE = "image"  # float32 [H, W, 3], normalised to [-1, 1]
ORIGINAL_IMAGE = "original_image"  # uint8-range float32 [H, W, 3], before normalisation
LABEL = "label"  # int32 [H, W, 1], class ids; IGNORE_LABEL where unknown
IMAGE_NAME = "image_name"  # string
HEIGHT = "height"  # int32, size of the image before padding
WIDTH = "width"  # int32

# --- Prediction keys (what models and evaluators return) --------------------
SEMANTIC_LOGITS = "semantic_logits"

# --- TFRecord feature keys (the original DeepLab format, unchanged) ---------
KEY_IMAGE_ENCODED = "image/encoded"
KEY_IMAGE_FILENAME = "image/filename"
KEY_IMAGE_FORMAT = "image/format"
KEY_IMAGE_HEIGHT = "image/height"
KEY_IMAGE_WIDTH = "image/width"
KEY_IMAGE_CHANNELS = "image/channels"
KEY_LABEL_ENCODED = "image/segmentation/class/encoded"
KEY_LABEL_FORMAT = "image/segmentation/class/format"

# --- Model constants ---------------------------------------------------------
DEFAULT_IGNORE_LABEL = 255
MEAN_PIXEL = (127.5, 127.5, 127.5)  # DeepLab pads images with this value

# Top-level module names: the first part of every layer path (model_stats,
# import_weights and checkpoints all speak this language).
BACKBONE = "backbone"
HEAD = "head"
DECODER = "decoder"
LOGITS = "logits"

# Endpoints of every backbone (the dict its Keras model returns).
FEATURES = "features"  # the head's input, at the output stride
LOW_LEVEL = "low_level"  # stride 4, the decoder's input

# --- Geometry ----------------------------------------------------------------
OUTPUT_STRIDES = (8, 16, 32)  # what the backbones, heads and configs support
# Eval and export pad images to k * PAD_MULTIPLE + 1 (the largest output
# stride), so that DeepLab's sizes such as 513 and 769 align exactly.
PAD_MULTIPLE = 32
MIN_CROP_SIZE = 33  # 32x downsampling in the backbone needs at least 1 + 32 pixels
MAX_CROP_SIDE = 16385  # 16K pixels a side (k*32+1); larger cannot fit any device
