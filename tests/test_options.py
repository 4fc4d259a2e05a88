"""--ea-* options: help text, and invalid values stop start-up with a message
naming the value and what is allowed."""

import pytest

from conftest import build_model, fairseq_cli, run, ROOT
import subprocess
import sys


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--ea-alpha", "1.5", "--ea-alpha must be in [0, 1], got 1.5"),
        ("--ea-alpha", "half", "--ea-alpha must be a number in [0, 1], got 'half'"),
        ("--ea-beta", "-0.1", "--ea-beta must be in [0, 1], got -0.1"),
        ("--ea-kernel-size", "4", "--ea-kernel-size must be a positive odd integer, got 4"),
        ("--ea-kernel-size", "0", "--ea-kernel-size must be a positive odd integer, got 0"),
        ("--ea-activation", "tanh",
         "--ea-activation must be one of relu, leaky_relu, gelu, linear, got 'tanh'"),
        ("--ea-stacks", "encoder,foo",
         "--ea-stacks must be a comma-separated list of distinct names from "
         "encoder,decoder,cross (or 'none'), got 'encoder,foo'"),
        ("--ea-ramp-updates", "-5",
         "--ea-ramp-updates must be a non-negative integer (updates; 0 = no ramp), got -5"),
        ("--ea-ramp-updates", "1e3",
         "--ea-ramp-updates must be a non-negative integer (updates; 0 = no ramp), got '1e3'"),
        ("--ea-stacks", "cross,cross",
         "--ea-stacks must be a comma-separated list of distinct names from "
         "encoder,decoder,cross (or 'none'), got 'cross,cross'"),
    ],
)
def test_invalid_values_are_rejected_at_parse_time(dict_dir, capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        build_model(dict_dir, extra=[option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {message}" in err


@pytest.mark.parametrize(
    "values,expected",
    [
        ([], dict(alpha=0.8, beta=0.5, kernel_size=3, activation="relu")),
        (["--ea-alpha", "0.2", "--ea-beta", "0.7", "--ea-kernel-size", "5",
          "--ea-activation", "gelu"], dict(alpha=0.2, beta=0.7, kernel_size=5, activation="gelu")),
    ],
)
def test_values_reach_every_evolving_layer(dict_dir, values, expected):
    model, _, _ = build_model(dict_dir, extra=values)
    evolving = [m.evolving for m in model.modules() if getattr(m, "evolving", None) is not None]
    assert len(evolving) == 6  # layers 2 and 3 of three stacks
    for module in evolving:
        assert {k: getattr(module, k) for k in expected} == expected
        assert module.conv.kernel_size == (expected["kernel_size"],) * 2


def test_stacks_select_what_evolves(dict_dir):
    model, _, _ = build_model(dict_dir, extra=["--ea-stacks", "encoder,cross"])
    assert model.encoder.layers[1].self_attn.evolving is not None
    assert model.decoder.layers[1].encoder_attn.evolving.causal
    assert not hasattr(model.decoder.layers[1].self_attn, "evolving")


def test_unsupported_fairseq_options_are_rejected(dict_dir):
    with pytest.raises(ValueError, match="--cross-self-attention is not supported"):
        build_model(dict_dir, extra=["--cross-self-attention"])
    # fine without an evolving decoder self-attention, as the message says
    model, _, _ = build_model(dict_dir, extra=["--cross-self-attention", "--ea-stacks",
                                               "encoder,cross"])
    assert model.decoder.cross_self_attention
    assert model.decoder.layers[1].encoder_attn.evolving is not None


def test_help_text_and_cli_error(dict_dir):
    from fairseq import options
    parser = options.get_training_parser()
    options.parse_args_and_arch(parser, [str(dict_dir), "--user-dir", str(ROOT / "evo_fairseq"),
                                         "--task", "translation", "--arch", "ea_transformer"])
    help_text = parser.format_help()
    module_help = run([sys.executable, "-m", "evo_fairseq", "--help"]).stdout
    for text in (help_text, module_help):
        for option in ("--ea-alpha", "--ea-beta", "--ea-kernel-size", "--ea-activation",
                       "--ea-stacks"):
            assert option in text
        assert "weight of the previous layer's attention map" in " ".join(text.split())
    assert f"--user-dir {ROOT / 'evo_fairseq'} " in module_help  # absolute: runs from anywhere
    proc = subprocess.run(
        [fairseq_cli("train"), str(dict_dir), "--user-dir", str(ROOT / "evo_fairseq"),
         "--task", "translation", "-s", "de", "-t", "en", "--arch", "ea_transformer_iwslt_de_en",
         "--ea-kernel-size", "2"], capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "--ea-kernel-size must be a positive odd integer, got 2" in proc.stderr


def test_architectures_mirror_fairseq_sizes(dict_dir):
    from fairseq.models import ARCH_CONFIG_REGISTRY
    import argparse
    for name in ["tiny", "iwslt_de_en", "wmt_en_de", "vaswani_wmt_en_de_big", "vaswani_wmt_en_fr_big",
                 "wmt_en_de_big", "wmt_en_de_big_t2t"]:
        plain, ea = argparse.Namespace(), argparse.Namespace()
        ARCH_CONFIG_REGISTRY[f"transformer_{name}"](plain)
        ARCH_CONFIG_REGISTRY[f"ea_transformer_{name}"](ea)
        ea_only = {k: v for k, v in vars(ea).items() if k.startswith("ea_")}
        assert {k: v for k, v in vars(ea).items() if not k.startswith("ea_")} == vars(plain), name
        assert ea_only == {"ea_alpha": 0.8, "ea_beta": 0.5, "ea_kernel_size": 3,
                           "ea_activation": "relu", "ea_stacks": "encoder,decoder,cross",
                           "ea_ramp_updates": 0}
