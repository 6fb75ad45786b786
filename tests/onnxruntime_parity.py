#!/usr/bin/env python3
"""A second ONNX client: onnx.checker accepts hark's exported model, and onnxruntime's scores
match tract's within 1e-4, hop by hop with the LSTM state carried and in one 500-frame call.

    python3 tests/onnxruntime_parity.py [CASE_DIR]

Without CASE_DIR it builds a case with `cargo run -p hark-e2e --example parity_case`.
A negative control checks that the comparison fails on a model with forget and output
gates swapped.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

TOL = 1e-4


def load(d, name, shape):
    return np.fromfile(os.path.join(d, name), dtype="<f4").reshape(shape)


def run_ort(model_bytes, x, layers, hidden, stepwise):
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    h = np.zeros((layers, 1, hidden), np.float32)
    c = np.zeros((layers, 1, hidden), np.float32)
    if not stepwise:
        return sess.run(["scores"], {"features": x[None], "h_in": h, "c_in": c})[0][0]
    out = []
    for t in range(x.shape[0]):
        s, h, c = sess.run(["scores", "h_out", "c_out"], {"features": x[None, t : t + 1], "h_in": h, "c_in": c})
        out.append(s[0, 0])
    return np.stack(out)


def swap_forget_output(model):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        if init.name.startswith("lstm") and init.name.split("_")[-1] in ("W", "R", "B"):
            a = onnx.numpy_helper.to_array(init).copy()
            if init.name.endswith("B"):
                h = a.shape[1] // 8
                for base in (0, 4 * h):
                    a[:, base + h : base + 2 * h], a[:, base + 2 * h : base + 3 * h] = (
                        a[:, base + 2 * h : base + 3 * h].copy(),
                        a[:, base + h : base + 2 * h].copy(),
                    )
            else:
                h = a.shape[1] // 4
                a[:, h : 2 * h], a[:, 2 * h : 3 * h] = a[:, 2 * h : 3 * h].copy(), a[:, h : 2 * h].copy()
            init.CopyFrom(onnx.numpy_helper.from_array(a, init.name))
    return m


def main():
    if len(sys.argv) > 1:
        d = sys.argv[1]
    else:
        d = tempfile.mkdtemp(prefix="hark-ort-")
        subprocess.run(["cargo", "run", "--quiet", "--locked", "-p", "hark-e2e", "--example", "parity_case", "--", d], check=True)
    case = json.load(open(os.path.join(d, "case.json")))
    t, m, k, layers, hidden = case["frames"], case["n_mels"], case["classes"], case["layers"], case["hidden"]
    model = onnx.load(os.path.join(d, "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["hark.format_version"]) == 1, meta
    x = load(d, "features.f32", (t, m))
    failures = 0
    for name, stepwise in (("tract_steps.f32", True), ("tract_whole.f32", False)):
        want = load(d, name, (t, k))
        got = run_ort(model.SerializeToString(), x, layers, hidden, stepwise)
        diff = float(np.max(np.abs(got - want)))
        ok = diff <= TOL
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} onnxruntime vs tract, {'500 steps' if stepwise else 'one call'}: max diff {diff:.2e}")
    # The control compares the final LSTM state (the scores of a freshly initialised network
    # are nearly uniform, so the state shows a wrong gate order far more plainly).
    def final_h(mp):
        sess = ort.InferenceSession(mp.SerializeToString(), providers=["CPUExecutionProvider"])
        z = np.zeros((layers, 1, hidden), np.float32)
        return sess.run(["h_out"], {"features": x[None], "h_in": z, "c_in": z})[0]

    diff = float(np.max(np.abs(final_h(swap_forget_output(model)) - final_h(model))))
    control_ok = diff > 100 * TOL
    failures += not control_ok
    print(f"{'ok  ' if control_ok else 'FAIL'} negative control (gates swapped) differs by {diff:.2e}")
    print(f"{3 - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
