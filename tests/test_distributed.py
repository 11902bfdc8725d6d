"""torchrun with 2 gloo processes on the CPU: DDP training matches one process on the same global
batch; sharded generation yields exactly the unsharded set of items."""

import json
import socket
import subprocess
import sys
import textwrap

import torch

from forensics import corpus

from conftest import FORENSICS, ROOT

SCRIPT = textwrap.dedent('''
    import sys, torch
    from safetensors.torch import save_file
    from generators.base import Config, Generator
    from generators.train import TrainConfig, train

    class AE(Generator):  # deterministic loss, so the two runs are comparable
        name = "ae_test"
        def __init__(self, config):
            super().__init__(config)
            self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(),
                                           torch.nn.Conv2d(8, 3, 3, padding=1))
        def loss(self, x):
            return (self.net(x) - x).pow(2).mean()

    torch.manual_seed(0)
    model = AE(Config())
    data = torch.linspace(-1, 1, 32 * 3 * 8 * 8).reshape(32, 3, 8, 8).sin()
    ema, _ = train(model, data, TrainConfig(steps=3, batch_size=8, lr=1e-2, warmup=1, ema_decay=0.0),
                   progress=False)
    import os
    if int(os.environ.get("RANK", "0")) == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[1])
''')


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args, timeout=300, env=None):
    import os

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_port()), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


# torchrun's own parser would take `--n` as an abbreviation of its options, so the CLI's
# arguments travel in an environment variable.
CLI_WRAPPER = "import json, os, sys; sys.path.insert(0, os.getcwd()); import cli; sys.exit(cli.main(json.loads(os.environ['CLI_ARGS'])))"


def test_ddp_step_matches_single_process(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single.safetensors")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert single.returncode == 0, single.stderr
    ddp = _torchrun(script, tmp_path / "ddp.safetensors")
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    a, b = load_file(tmp_path / "single.safetensors"), load_file(tmp_path / "ddp.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def _items(d):
    return sorted((r["architecture"], r["seed"]) for r in corpus.Corpus(d).rows)


def test_sharded_generation_equals_unsharded(tmp_path, tiny_pipeline):
    ck = tiny_pipeline["vae"]
    common = ["generate", "--arch", "vae", "--n", "10", "--checkpoint", ck, "--quiet", "--device", "cpu"]
    r = subprocess.run([*FORENSICS, *common, "--out", tmp_path / "one"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for i in range(2):  # manual shards, then an explicit merge
        r = subprocess.run([*FORENSICS, *common, "--out", tmp_path / "manual", "--shard", f"{i}/2"],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([*FORENSICS, "corpus", "merge", tmp_path / "manual"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0 and json.loads(r.stdout)["merged_shards"] == 2, r.stderr
    wrapper = tmp_path / "cli_wrapper.py"
    wrapper.write_text(CLI_WRAPPER)
    tr = _torchrun(wrapper, env={"CLI_ARGS": json.dumps([*map(str, common), "--out", str(tmp_path / "torchrun")])})
    assert tr.returncode == 0, tr.stderr[-2000:]
    want = _items(tmp_path / "one")
    assert len(want) == 10
    assert _items(tmp_path / "manual") == want
    assert _items(tmp_path / "torchrun") == want
    assert corpus.verify(tmp_path / "torchrun")["ok"]
    one = {r["file_name"]: r["sha256"] for r in corpus.Corpus(tmp_path / "one").rows}
    tor = {r["file_name"]: r["sha256"] for r in corpus.Corpus(tmp_path / "torchrun").rows}
    assert one == tor  # the same seed gives the same bytes on any shard
