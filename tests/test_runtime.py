"""affpipe.runtime: deterministic kernels without loading TorchDynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys, torch
from affpipe import runtime
runtime.deterministic_kernels(torch.device("cpu"), strict_cpu={strict})
print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
      "torch._inductor.config" in sys.modules, "torch._dynamo" in sys.modules)
"""


@pytest.mark.parametrize(("strict", "warn_only"), [(True, False), (False, True)])
def test_deterministic_kernels_set_torchs_flags_without_loading_dynamo(strict, warn_only):
    """The flags torch.use_deterministic_algorithms sets for the kernels are set; Inductor and
    TorchDynamo (about 2 s of CPU per job) are not imported."""
    res = subprocess.run([sys.executable, "-c", CHECK.format(strict=strict)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", str(warn_only), "False", "False"]


def test_with_inductor_loaded_the_public_call_sets_its_option_too():
    import torch
    import torch._inductor.config as inductor_config

    from affpipe import runtime

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              inductor_config.deterministic)
    try:
        runtime.use_deterministic_algorithms(True, warn_only=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert inductor_config.deterministic is True
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        inductor_config.deterministic = before[2]
