"""Command-line tools: model statistics, weight import, prediction.

The libraries they drive live below (`deeplab_dpc.modeling.complexity`,
`deeplab_dpc.export`, ...); nothing in the package imports a tool.
"""

import sys

if sys.argv[:1] == ["-m"]:  # `python -m deeplab_dpc.tools.x`: before TF loads
    from deeplab_dpc.core import console

    console.quiet_tensorflow()
