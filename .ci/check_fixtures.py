"""Regenerate the SAE format fixtures into a temporary directory and check that they hold
exactly what is committed (npz archives compared by array, since zip headers carry times)."""
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

committed = Path(__file__).resolve().parent.parent / "crates/sae/tests/fixtures"
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, str(committed / "make_fixtures.py"), tmp], check=True)
    fresh = Path(tmp)
    names = sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file() and p.suffix != ".py" and p.name != "README.md")
    for rel in names:
        a, b = committed / rel, fresh / rel
        if not b.exists():
            sys.exit(f"fixture {rel} is committed but make_fixtures.py no longer writes it")
        if rel.suffix == ".npz":
            x, y = np.load(a), np.load(b)
            if sorted(x.files) != sorted(y.files) or any(not np.array_equal(x[k], y[k]) for k in x.files):
                sys.exit(f"fixture {rel} differs from what make_fixtures.py writes")
        elif a.read_bytes() != b.read_bytes():
            sys.exit(f"fixture {rel} differs from what make_fixtures.py writes")
    extra = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()) 
    missing = [str(r) for r in extra if not (committed / r).exists()]
    if missing:
        sys.exit(f"make_fixtures.py writes uncommitted fixtures: {missing}")
print(f"fixtures: {len(names)} files regenerated and identical")
