"""Export for serving: `saved_model` (SavedModel, two signatures) and `tflite`.

`saved_model.export_model` is the entry point (it calls `tflite` when a TFLite
file is asked for); `tflite` imports nothing of `saved_model`.
"""
