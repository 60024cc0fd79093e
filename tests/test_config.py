"""The TOML run description: strict schema, defaults, round trip, error messages."""

import pytest

from bnn_mcmc.config import SCHEMA, ConfigError, describe_schema, from_dict, load_config

MINIMAL = {"data": {"name": "regression_gap"}}


def test_defaults_filled_and_round_trip(tmp_path):
    cfg = from_dict(MINIMAL, tmp_path)
    assert cfg.sampler["type"] == "nuts" and cfg.run["chains"] == 4
    assert cfg.sampler["max_tree_depth"] is None  # the sampler's own default applies
    assert cfg.network["hidden"] == [50, 50]
    assert cfg.output_dir == (tmp_path / "bnn_mcmc_run").resolve()
    again = from_dict(cfg.as_dict(), tmp_path)
    assert again == cfg
    assert all(v is not None for sec in cfg.as_dict().values() for v in sec.values())
    assert "max_tree_depth" not in cfg.as_dict()["sampler"]


def test_toml_file_loads_and_paths_resolve_against_it(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "run.toml"
    path.write_text(
        '[data]\nname = "two_moons"\nn = 50\n[network]\nhidden = [8]\nactivation = "relu"\n'
        '[sampler]\ntype = "hmc"\nnum_steps = 5\nstep_size = 0.01\n[run]\noutput_dir = "out"\n'
    )
    cfg = load_config(path)
    assert cfg.data["n"] == 50 and cfg.network["activation"] == "relu"
    assert cfg.sampler["step_size"] == 0.01 and isinstance(cfg.sampler["step_size"], float)
    assert cfg.output_dir == (tmp_path / "sub" / "out").resolve()


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"data": {"name": "regression_gap"}, "samplr": {}}, "unknown section [samplr]"),
        ({"data": {"name": "regression_gap", "nn": 3}}, "data.nn: unknown key"),
        ({"data": {"name": "mnist"}}, "data.name: 'mnist' is not allowed; choose one of"),
        ({**MINIMAL, "sampler": {"warmup": "100"}}, "sampler.warmup: expected an integer"),
        ({**MINIMAL, "sampler": {"warmup": 1.5}}, "sampler.warmup: expected an integer"),
        ({**MINIMAL, "sampler": {"warmup": True}}, "sampler.warmup: expected an integer"),
        ({**MINIMAL, "sampler": {"draws": 0}}, "sampler.draws: must be >= 1"),
        ({**MINIMAL, "sampler": {"step_size": 0.0}}, "sampler.step_size: must be > 0"),
        ({**MINIMAL, "sampler": {"target_accept": 1.2}}, "sampler.target_accept: must lie in"),
        ({**MINIMAL, "sampler": {"type": "sgld"}}, "'nuts', 'hmc', 'mh'"),
        ({**MINIMAL, "network": {"hidden": [10, 0]}}, "network.hidden[1]"),
        ({**MINIMAL, "network": {"hidden": 10}}, "network.hidden: expected an array"),
        ({**MINIMAL, "network": {"bias": 1}}, "network.bias: expected a boolean"),
        ({**MINIMAL, "run": {"backend": "mpi"}}, "'sequential', 'joblib', 'vectorized', 'dask'"),
        ({**MINIMAL, "run": {"scheduler_address": "tcp://h:1"}}, "only used with run.backend"),
        ({"data": {"name": "csv", "path": "a.csv"}}, "data.inputs: required"),
        (
            {"data": {"name": "csv", "path": "a.csv", "inputs": ["x"], "targets": [1]}},
            "data.targets[0]",
        ),
        ({"data": {"name": "cubic", "inputs": ["x"]}}, "data.inputs: only for data.name"),
        (
            {"data": {"name": "csv", "path": "a.csv", "inputs": ["x"], "targets": ["y"], "n": 3}},
            "data.n: only for built-in",
        ),
        ({"network": {}}, "data.name: required"),
        ({**MINIMAL, "sampler": {"num_steps": 5}}, "sampler.num_steps: only used with"),
        ({**MINIMAL, "sampler": {"type": "hmc", "max_tree_depth": 5}}, "= 'nuts', not 'hmc'"),
        ({**MINIMAL, "sampler": {"type": "mh", "step_size": 0.1}}, "sampler.step_size: only"),
        ({**MINIMAL, "likelihood": {"type": "gaussian", "df": 3}}, "likelihood.df: only"),
        ({**MINIMAL, "likelihood": {"df": 3}}, "likelihood.df: only"),
        (
            {
                "data": {
                    "name": "csv",
                    "path": "a.csv",
                    "inputs": ["x"],
                    "targets": ["y"],
                    "seed": 1,
                }
            },
            "data.seed: only for built-in",
        ),
        ({"data": 3}, "[data] must be a table"),
    ],
)
def test_bad_values_name_the_key_and_allowed_values(raw, fragment, tmp_path):
    with pytest.raises(ConfigError) as err:
        from_dict(raw, tmp_path)
    assert fragment in str(err.value)


def test_unknown_key_lists_allowed_keys(tmp_path):
    with pytest.raises(ConfigError, match="allowed keys in \\[sampler\\]: type, warmup"):
        from_dict({**MINIMAL, "sampler": {"stepsize": 0.1}}, tmp_path)


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\nname = 1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_describe_schema_lists_every_key():
    text = describe_schema()
    assert 'activation = "tanh"' in text and "bias = true" in text and "n = (unset)" in text
    for section, keys in SCHEMA.items():
        assert f"[{section}]" in text
        for k in keys:
            assert f"  {k} = " in text
