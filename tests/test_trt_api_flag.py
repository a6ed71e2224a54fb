"""``--trt-api`` names the TensorRT API; ``--backend`` (the old spelling) still works and still lands in
the ``backend`` key of the args record."""

from __future__ import annotations

import argparse

import pytest

from common.core.errors import UserError
from common.trt import api


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    api.add_api_args(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("flag", ["--trt-api", "--backend"])
def test_both_spellings(flag):
    ns = _parse(flag, "tensorrt-rtx")
    assert ns.trt_api == "tensorrt-rtx" and ns.backend == "tensorrt-rtx"


def test_default_and_old_names():
    ns = _parse()
    assert ns.trt_api is None and ns.backend is None
    assert api.load_backend is api.load_api and api.add_backend_args is api.add_api_args
    assert api.BACKENDS is api.TRT_APIS


def test_unknown_api_names_the_new_flag():
    with pytest.raises(UserError, match="--trt-api"):
        api.load_api("tensorrt-llm")
