import json, tempfile, time, subprocess, sys
from pathlib import Path
from benchmarks.fakeproc import FakeProcess
d = Path(tempfile.mkdtemp())
with FakeProcess(d/"comfy", d/"fake.log") as fake:
    t0=time.time()
    out = subprocess.run([sys.executable, "-m", "benchmarks.worker_side", "download", "--base-url", fake.base_url, "--out", str(d/"dl"), "--size", str(1<<30), "--small", "500"], capture_output=True, text=True)
    print(out.stderr[-3000:])
    print(json.dumps(json.loads(out.stdout), indent=1), time.time()-t0)
    t0=time.time()
    out = subprocess.run([sys.executable, "-m", "benchmarks.worker_side", "idle", "--base-url", fake.base_url, "--out", str(d/"idle"), "--seconds", "5"], capture_output=True, text=True)
    print(out.stderr[-3000:]); print(out.stdout, time.time()-t0)
