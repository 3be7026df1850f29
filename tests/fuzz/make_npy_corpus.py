"""Writes the seed corpus of the npy fuzz target (tests/fuzz/make_corpus.sh
runs it with Debian's /usr/bin/python3): .npy files in every format version
and dtype the CLI reads, .npz archives as np.savez and np.savez_compressed
write them, and files the CLI must refuse (big-endian, Fortran order, other
dtypes, a truncated file, a member that is not .npy).

    /usr/bin/python3 make_npy_corpus.py OUT_DIR   ->  OUT_DIR/npy/seed-*
"""

import io
import os
import sys
import zipfile

import numpy as np


def main():
    out = os.path.join(sys.argv[1], "npy")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20240611)
    count = 0

    def write(name, data):
        nonlocal count
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(data)
        count += 1

    def npy(array, version=None):
        buf = io.BytesIO()
        if version is None:
            np.save(buf, array)
        else:
            np.lib.format.write_array(buf, array, version=version)
        return buf.getvalue()

    a = rng.random((2, 2, 3, 3)).astype("<f4")
    for dtype in ("<f4", "<f2", "<f8"):
        write("v1-" + dtype[1:], npy(a.astype(dtype)))
    write("v2-f4", npy(a, version=(2, 0)))
    write("v3-f2", npy(a.astype("<f2"), version=(3, 0)))
    write("scalar", npy(np.float32(0.5)))
    write("empty", npy(np.zeros((0, 3), dtype="<f4")))
    write("vector", npy(rng.random(5).astype("<f4")))
    # Refused: big-endian, Fortran order, int dtype, truncated data.
    write("big-endian", npy(a.astype(">f4")))
    write("fortran", npy(np.asfortranarray(rng.random((3, 2)).astype("<f4"))))
    write("int32", npy(np.arange(6, dtype="<i4").reshape(2, 3)))
    write("truncated", npy(a)[:-7])

    layers = [rng.random((2, 3, 3)).astype("<f4") for _ in range(3)]
    for name, save in (("savez", np.savez), ("savez-compressed", np.savez_compressed)):
        buf = io.BytesIO()
        save(buf, *layers, extra=np.ones(2, dtype="<f2"))
        write(name, buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf)
    write("savez-empty", buf.getvalue())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("arr_0.npy", npy(layers[0]))
        z.writestr("notes.txt", b"not an array")
    write("npz-foreign-member", buf.getvalue())
    print(f"make_npy_corpus: wrote {count} seeds under {out}")


if __name__ == "__main__":
    main()
