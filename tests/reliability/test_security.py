"""Security: artifacts load as safetensors or FAISS files only (no pickle, no torch.load, no
eval of data), and S3 endpoint and credentials come only from config and the standard AWS chain.
(No credentials in logs, summaries or tables: test_crash_and_rerun.py greps every output of its
spark-submit runs, which all carry dummy AWS keys.)"""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = sorted([*(ROOT / "georank").rglob("*.py"), *(ROOT / "jobs").rglob("*.py")])

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "marshal", "shelve"}
UNSAFE_CALLS = {  # dotted call name -> why
    "torch.load": "torch.load unpickles",
    "pickle.load": "unpickles",
    "pickle.loads": "unpickles",
    "pd.read_pickle": "unpickles",
    "pandas.read_pickle": "unpickles",
    "yaml.load": "yaml.load can build objects; use yaml.safe_load",
    "yaml.unsafe_load": "builds arbitrary objects",
    "eval": "evaluates data as code",
    "exec": "executes data as code",
    "torch.hub.load": "fetches and runs code from a hub",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                if n.split(".")[0] in UNSAFE_MODULES:
                    out.append(f"{rel}:{node.lineno}: imports {n}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if name in UNSAFE_CALLS:
            out.append(f"{rel}:{node.lineno}: {name} ({UNSAFE_CALLS[name]})")
        if name.endswith(("np.load", "numpy.load")) and isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value:
            out.append(f"{rel}:{node.lineno}: np.load(allow_pickle=True)")
        if isinstance(kw.get("trust_remote_code"), ast.Constant) and kw["trust_remote_code"].value:
            out.append(f"{rel}:{node.lineno}: trust_remote_code=True runs code shipped with a checkpoint")
        # A model's weights load from safetensors, from a local directory: never a .bin, never a hub.
        receiver = name.rsplit(".", 1)[0]
        if name.endswith(".from_pretrained") and receiver.endswith(("Model", "ForConditionalGeneration", "WithProjection")):
            for key in ("use_safetensors", "local_files_only"):
                v = kw.get(key)
                if not (isinstance(v, ast.Constant) and v.value is True):
                    out.append(f"{rel}:{node.lineno}: {name} without {key}=True")
    return out


def test_scanner_catches_what_it_looks_for(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import pickle\nimport torch\nx = torch.load('w.pt')\ny = eval(s)\nimport yaml\nc = yaml.load(t)\n"
        "m = CLIPVisionModelWithProjection.from_pretrained(d, use_safetensors=True)\n"
        "import numpy as np\nz = np.load(f, allow_pickle=True)\nt = AutoTokenizer.from_pretrained(d, trust_remote_code=True)\n"
    )
    found = "\n".join(_findings(probe))
    for what in ("imports pickle", "torch.load", "eval", "yaml.load", "without local_files_only=True",
                 "allow_pickle=True", "trust_remote_code=True"):
        assert what in found, what
    assert "without use_safetensors=True" not in found


def test_no_unsafe_deserialisation_in_library_or_jobs() -> None:
    assert len(SCANNED) > 20
    findings = [f for p in SCANNED for f in _findings(p)]
    assert findings == [], "unsafe loading of data:\n" + "\n".join(findings)


def test_embedder_refuses_a_pickle_only_checkpoint(tiny_world: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A CLIP directory holding only pytorch_model.bin (pickle) is refused; torch.load never runs."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from georank.config import EmbedConfig, S3Config
    from georank.embed import load_embedder
    from georank.errors import CheckpointError

    src = tiny_world / "models" / "clip"
    dst = tmp_path / "clip-pickle"
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
    state = {}
    for f in src.glob("*.safetensors"):
        state.update(load_file(str(f)))
    torch.save(state, dst / "pytorch_model.bin")  # the test writes a pickle; georank must not read it

    def no_torch_load(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("torch.load was called on a checkpoint")

    monkeypatch.setattr(torch, "load", no_torch_load)
    with pytest.raises(CheckpointError, match=r"could not load a CLIP vision model from .*clip-pickle"):
        load_embedder(EmbedConfig(model_uri=str(dst)), S3Config())


def test_s3_settings_come_from_config_and_credentials_from_the_aws_chain(monkeypatch) -> None:
    from georank.config import S3Config
    from georank.storage import s3_client

    assert not [f for f in S3Config.model_fields if any(w in f.lower() for w in ("key", "secret", "token", "password", "cred"))]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "GEORANKTESTKEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "GEORANKTESTSECRET")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = s3_client(S3Config(endpoint_url="http://127.0.0.1:9", region="eu-west-3", path_style=True))
    assert client.meta.endpoint_url == "http://127.0.0.1:9" and client.meta.region_name == "eu-west-3"
    creds = client._request_signer._credentials  # the standard chain found the environment's keys
    assert (creds.access_key, creds.secret_key, creds.method) == ("GEORANKTESTKEYID", "GEORANKTESTSECRET", "env")
    # No call in the library passes credentials explicitly, and the Spark conf never carries them.
    for path in SCANNED:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                bad = {k.arg for k in node.keywords} & {"aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
                assert not bad, f"{path.relative_to(ROOT)}:{node.lineno} passes {bad}"
    src = (ROOT / "georank" / "spark" / "session.py").read_text()
    assert "fs.s3a.access.key" not in src and "fs.s3a.secret.key" not in src


# --- issue 22 item 6: a secret given with --set is never printed back ------------------------------

SECRET = "GEORANKTESTSECRETVALUE42"


def _submit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GEORANK_SKIP_SETUP": "1"}
    return subprocess.run([str(ROOT / "spark-submit.sh"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "secret_set",
    [
        f"spark.conf.spark.hadoop.fs.s3a.secret.key={SECRET}",
        f'spark.conf."spark.hadoop.fs.s3a.secret.key"={SECRET}',
        f"s3.region=[{SECRET}]",
    ],
)
def test_the_credential_grep_runs_over_the_config_error_output(secret_set: str) -> None:
    """A config error with a secret in --set (it fails at the config check, before any JVM starts):
    exit 2, and the secret appears nowhere in stdout or stderr."""
    r = _submit("jobs/geotag.py", "--conf", "conf/local.yaml", "--run-date", "2026-11-23",
                "--set", secret_set, "--set", "rank.no_such_key=1")
    assert r.returncode == 2, r.stderr
    assert SECRET not in r.stdout and SECRET not in r.stderr
    assert "unknown config key 'rank.no_such_key'" in r.stderr and "SparkContext" not in r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["status"] == "failed" and "rank.no_such_key" in summary["error"]


@pytest.mark.parametrize(
    ("secret_set", "key", "expected"),
    [
        (f"s3.region=[{SECRET}]", "s3.region", "expected a string, got a list"),
        (f"write.staging_ttl_hours={SECRET}", "write.staging_ttl_hours", "expected a number, got a string"),
        (f"s3.path_style={SECRET}", "s3.path_style", "expected true or false, got a string"),
        (f"spark.conf.spark.hadoop.fs.s3a.access.key=[{SECRET}]", 'spark.conf."spark.hadoop.fs.s3a.access.key"',
         "expected a string, got a list"),
    ],
)
def test_run_job_names_the_key_and_type_never_the_value(secret_set: str, key: str, expected: str, capsys, caplog) -> None:  # type: ignore[no-untyped-def]
    from georank.cli import run_job

    ran = []
    code = run_job("geotag", lambda *a: ran.append(a), argv=["--conf", "conf/local.yaml", "--set", secret_set])
    out = capsys.readouterr()
    assert code == 2 and not ran
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["error"].startswith(f"ConfigError: config key '{key}' in conf/local.yaml with --set ")
    assert summary["error"].endswith(expected)
    for text in (out.out, out.err, caplog.text):
        assert SECRET not in text


def test_check_config_names_the_key_never_the_value(capsys) -> None:  # type: ignore[no-untyped-def]
    from georank.cli import check_config_main

    code = check_config_main(["--job", "geotag", "--conf", "conf/local.yaml", "--run-date", "2026-11-23",
                              "--set", f"write.staging_ttl_hours={SECRET}"])
    out = capsys.readouterr()
    assert code == 2
    assert "config key 'write.staging_ttl_hours' in conf/local.yaml with --set write.staging_ttl_hours: expected a number, got a string" in out.err
    assert SECRET not in out.out + out.err


def test_a_stray_value_on_the_command_line_is_not_echoed_by_argparse(capsys, caplog) -> None:  # type: ignore[no-untyped-def]
    """`--set KEY VALUE` (a space for the '='): argparse would list VALUE as an unrecognised argument."""
    from georank.cli import run_job

    code = run_job("geotag", lambda *a: None,
                   argv=["--conf", "conf/local.yaml", "--set", "spark.conf.spark.hadoop.fs.s3a.secret.key", SECRET, "--bogus=1"])
    out = capsys.readouterr()
    assert code == 2
    assert "unrecognized arguments: --bogus and 1 more value (not shown: it may be a secret)" in out.err
    for text in (out.out, out.err, caplog.text):
        assert SECRET not in text


def test_a_validation_error_raised_inside_a_job_does_not_echo_its_input(capsys, caplog) -> None:  # type: ignore[no-untyped-def]
    """pydantic's own message carries `input_value=...`: run_job renders it like a config error."""
    from georank.cli import run_job
    from georank.config import S3Config

    def main(args, cfg, summary):  # type: ignore[no-untyped-def]
        S3Config(region=[SECRET])

    code = run_job("geotag", main, argv=["--conf", "conf/local.yaml"])
    out = capsys.readouterr()
    assert code == 1
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["error"] == "ValidationError: config key 'region' in S3Config: expected a string, got a list"
    for text in (out.out, out.err, caplog.text):
        assert SECRET not in text


def test_no_library_or_job_code_logs_the_command_line_or_the_spark_conf() -> None:
    """Nothing echoes config values: no log or print of sys.argv, of --set, of the Spark conf."""
    bad = []
    for path in [*SCANNED, ROOT / "spark-submit.sh"]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            s = line.strip()
            logs = s.startswith(("log.", "logger.", "logging.", "print(", "echo ", "sys.stderr.write", "sys.stdout.write"))
            if logs and any(w in s for w in ("sys.argv", "args.set", "spark_conf(", "getConf", "getAll", "model_dump", "vars(args)", "$@", "job_args")):
                bad.append(f"{path.relative_to(ROOT)}:{n}: {s}")
    assert bad == []
