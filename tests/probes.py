"""What several test files share: memory measured in a fresh process, and files damaged on purpose.

``peak_around_a_wide_mlp``: a 29.4M-parameter MLP (7 layers of 2048 x 2048, 117 MB in float32); a test
hands it what to do with ``model`` and ``(X, y)``; the process reports its peak resident memory less what
it held before the model was built (torch, losstrail and the data loaded).

``declare_huge``: an .npz whose member claims far more than the file holds.
"""

import io
import json
import subprocess
import sys
import textwrap
import zipfile

import numpy as np

_SCRIPT = """
import json, resource, sys
import numpy as np, torch
torch.set_num_threads(2)
import losstrail as lt

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

torch.manual_seed(0)
width, depth = 2048, 7  # 7 layers of 2048 x 2048: 29.4M parameters, 117 MB in float32
X, y = torch.randn(16, width), torch.randint(0, 10, (16,))
base = peak()  # torch, losstrail and the data loaded; no model yet
layers = []
for _ in range(depth):
    layers += [torch.nn.Linear(width, width), torch.nn.{activation}()]
model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
params = sum(p.numel() * p.element_size() for p in model.parameters())
{body}
print(json.dumps({{"params": params, "peak": peak() - base, **figures}}))
"""


def peak_around_a_wide_mlp(tmp_path, activation: str, body: str, *args: str) -> tuple[dict, str]:
    """Run ``body`` (which sets ``figures``, a dict) in a fresh process after building the MLP with
    ``activation``; return its figures with ``params`` and ``peak`` (bytes), and what it wrote to stderr."""
    script = tmp_path / "memory.py"
    script.write_text(_SCRIPT.format(activation=activation, body=textwrap.dedent(body).strip()))
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def declare_huge(path, member: str = "loss.npy"):
    """Rewrite the .npz ``path`` so that ``member``'s header declares (10**6, 10**6) float64 values (8 TB), with
    none behind it: a reader must refuse it before allocating anything."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    with zipfile.ZipFile(path) as old:
        kept = {name: old.read(name) for name in old.namelist() if name != member}
    with zipfile.ZipFile(path, "w") as new:
        for name, data in kept.items():
            new.writestr(name, data)
        new.writestr(member, header.getvalue())
    return path
