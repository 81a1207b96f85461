"""`mlflow run . -e register`: log the G→U pipeline as a pyfunc model, register a version, set an alias.

Then anywhere: ``mlflow.pyfunc.load_model("models:/g2u@champion").predict(df)``. Small checkpoints are
copied into the model's artifacts; multi-GB ones are referenced by path (``--by-reference``, or
automatically above ``--copy-limit-gb``) so the registry never duplicates real weights.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path

from mlflow_project.common import PROJECT_DIR, log_params, setup_tracking


def _folder_gb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e9


def _pip_requirements() -> list[str] | None:
    """The project's runtime dependencies and mlflow, pinned to the versions this environment runs.

    Declared rather than left to mlflow's inference, which loads the model in a subprocess and runs the input
    example on it (minutes on real weights), lists only the modules that one example imported, and lists
    g2u-serve itself, which no index serves (its code travels in the model's code paths). None (mlflow infers)
    where the project is not installed as a distribution."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement
    from packaging.version import Version

    def pin(name: str) -> str:  # the public version: a local label (+cpu, +cu128) is on no package index
        return f"{name}=={Version(version(name)).public}"

    try:
        specs = requires("g2u-serve") or []
    except PackageNotFoundError:
        return None
    pinned = {"mlflow": pin("mlflow")}
    for spec in specs:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra (serve, eval, ...): the pyfunc model does not need it
        try:
            pinned[req.name] = pin(req.name)
        except PackageNotFoundError:
            pinned[req.name] = str(req)
    return sorted(pinned.values())


def _sample_image_b64() -> str:
    from PIL import Image

    from g2u.images import png_bytes

    img = Image.new("RGB", (64, 48), (90, 140, 200))
    return base64.b64encode(png_bytes(img)).decode()


def main(argv: list[str] | None = None) -> int:
    import mlflow
    import pandas as pd

    from g2u.loading import LoaderOptions, add_loader_arguments
    from mlflow_project.pyfunc_model import G2UPyfuncModel, pyfunc_signature

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__)
    add_loader_arguments(p, ("checkpoint", "backend"))  # a folder (default: the demo checkpoint of --backend)
    p.add_argument("--name", default="g2u", help="registered model name")
    p.add_argument("--alias", default="champion")
    p.add_argument("--by-reference", dest="by_reference", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--copy-limit-gb", dest="copy_limit_gb", default="2")
    args = p.parse_args(argv)
    setup_tracking()

    options = LoaderOptions.from_namespace(args)
    checkpoint = Path(options.resolved_checkpoint())
    by_reference = args.by_reference == "true" or (
        args.by_reference == "auto" and _folder_gb(checkpoint) > float(args.copy_limit_gb))
    example = pd.DataFrame([{"image": _sample_image_b64(), "question": "What colour is the picture?",
                             "mode": "g2u", "steps": 2, "seed": 0}])
    model_config = {"backend": options.backend, "checkpoint_path": str(checkpoint.resolve()) if by_reference
                    else None}
    with mlflow.start_run(run_name=f"register-{args.name}") as run:
        log_params({"checkpoint": str(checkpoint), "by_reference": by_reference, "alias": args.alias})
        info = mlflow.pyfunc.log_model(
            name="g2u",
            python_model=G2UPyfuncModel(),
            artifacts=None if by_reference else {"checkpoint": str(checkpoint)},
            model_config=model_config,
            code_paths=[str(PROJECT_DIR / "g2u"), str(PROJECT_DIR / "mlflow_project")],
            signature=pyfunc_signature(),
            input_example=example,
            pip_requirements=_pip_requirements(),
            registered_model_name=args.name,
        )
        version = info.registered_model_version
        client = mlflow.MlflowClient()
        client.set_registered_model_alias(args.name, args.alias, version)
        print(json.dumps({"run_id": run.info.run_id, "model_uri": f"models:/{args.name}@{args.alias}",
                          "version": version, "by_reference": by_reference}))
    return 0


if __name__ == "__main__":
    from g2u.entry import run_guarded

    sys.exit(run_guarded(main))  # one-line errors; --debug or G2U_DEBUG=1: the traceback
