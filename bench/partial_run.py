"""`python -m bench.partial_run --through NODE <cxr run flags>`: the pipeline up to one node.

For the scale benchmark's `--through`: measuring ingestion and statistics at 50,000 images
should not wait for training and evaluation. The pipeline is the one `cxr run` builds
(pipeline/pipeline.py, from the same flags); TFX's partial run skips every node that NODE
does not depend on, and ML Metadata records the ones that run as `cxr run` does.
"""
import argparse
import os
import sys
from typing import List, Optional

import bench  # noqa: F401  (before TensorFlow: selects Keras 2)
from cxr import cli


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.partial_run",
                                     description=__doc__.split("\n\n")[0],
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--through", required=True, metavar="NODE",
                        help="the last node to run, e.g. StatisticsGen")
    cli._add_pipeline_flags(parser)  # pylint: disable=protected-access
    args = parser.parse_args(argv)
    from tfx import v1 as tfx
    from tfx.orchestration import pipeline as tfx_pipeline

    from pipeline.pipeline import create_pipeline

    config = cli._config_from_args(args)  # pylint: disable=protected-access
    pipeline = create_pipeline(config)
    nodes = [component.id for component in pipeline.components]
    if args.through not in nodes:
        parser.error(f"--through: no node {args.through!r}; the pipeline's nodes: "
                     f"{', '.join(nodes)}")
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    tfx.orchestration.LocalDagRunner().run(
        pipeline, run_options=tfx_pipeline.RunOptions(to_nodes=[args.through]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
