"""OpenCL runtimes installed from PyPI that the ICD loader would not find on its own.

The loader (ocl-icd, bundled with pyopencl's wheel) lists the libraries named by the ``.icd`` files in
``OCL_ICD_VENDORS`` (default ``/etc/OpenCL/vendors``) plus the PoCL that ``pyopencl[pocl]`` ships.
Intel's CPU runtime for OpenCL (``pip install intel-opencl-rt intel-cmplr-lib-rt``; it has
``cl_khr_fp16``) puts ``libintelocl.so`` into ``<prefix>/lib``, but its ``.icd`` file names the conda
build prefix (``/opt/anaconda1anaconda2anaconda3/lib``), and the libraries it needs (libimf, libsvml,
libtbb, ...) are not on the dynamic linker's path. So ``platforms()`` does what the installer could not:

1. find each known runtime library in ``sys.prefix/lib`` or the user base's ``lib``, unless a vendors
   file already names a library of that file name (a system-wide install: no duplicate platform);
2. preload the libraries it needs (``RTLD_GLOBAL``, by path: the linker then resolves them by soname);
   a runtime whose dependencies fail to load is left out;
3. point ``OCL_ICD_VENDORS`` at a temporary directory holding the files of ``/etc/OpenCL/vendors`` plus
   one file per found runtime, enumerate the platforms (the loader reads the variable once, on its
   first call), then unset the variable and remove the directory.

Nothing is registered when the user set ``OCL_ICD_VENDORS`` (their choice of platforms) or
``HETERO_OCL_PIP_RUNTIMES=0``.

Traced example (this project's CI venv): step 1 finds ``.venv/lib/libintelocl.so``, step 2 loads
libintlc, libimf, libsvml, libirng and libtbb from ``.venv/lib``, step 3 enumerates "Portable Computing
Language" (pyopencl's PoCL) and "Intel(R) OpenCL". ``REGISTERED`` then names "Intel(R) OpenCL", so
discovery orders it after the platforms the loader found by itself.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import site
import sys
import tempfile
from pathlib import Path

#: platform name -> (runtime library, the libraries it needs, preloaded in this order)
RUNTIMES = {
    "Intel(R) OpenCL": ("libintelocl.so",
                        ("libintlc.so.5", "libimf.so", "libsvml.so", "libirng.so", "libtbb.so.12")),
}
DEFAULT_VENDORS = "/etc/OpenCL/vendors"

#: platform names whose runtime this module registered (filled by ``platforms``)
REGISTERED: set[str] = set()
_tried = False


def _vendor_files() -> list[Path]:
    try:
        return sorted(p for p in Path(DEFAULT_VENDORS).iterdir() if p.suffix == ".icd")
    except OSError:
        return []


def _lib_dirs() -> list[Path]:
    dirs = [Path(sys.prefix) / "lib"]
    try:
        dirs.append(Path(site.getuserbase()) / "lib")
    except Exception:
        pass
    return dirs


def _found(vendor_files: list[Path]) -> dict[str, Path]:
    """Steps 1-2: platform name -> path of each pip-installed runtime to register."""
    named = set()
    for f in vendor_files:
        try:
            named.add(Path(f.read_text().strip()).name)
        except OSError:
            continue
    found = {}
    for platform, (lib, needs) in RUNTIMES.items():
        if lib in named:
            continue
        for d in _lib_dirs():
            if (d / lib).is_file():
                try:
                    for dep in needs:
                        ctypes.CDLL(str(d / dep), mode=ctypes.RTLD_GLOBAL)
                except OSError:
                    break
                found[platform] = d / lib
                break
    return found


def platforms():
    """``pyopencl.get_platforms()``, with the pip-installed runtimes of ``RUNTIMES`` registered first
    when this is the process's first enumeration (later ones cannot change the loader's list)."""
    import pyopencl as cl

    global _tried
    # an OCL_ICD_VENDORS the user set is their choice of platforms: nothing is added to it
    if _tried or "OCL_ICD_VENDORS" in os.environ or os.environ.get("HETERO_OCL_PIP_RUNTIMES", "1") == "0":
        return cl.get_platforms()
    _tried = True
    vendor_files = _vendor_files()
    found = _found(vendor_files)
    if not found:
        return cl.get_platforms()
    tmp = tempfile.mkdtemp(prefix="hetero-icd-")
    try:
        # 3. the existing vendor files keep their names (and so the loader's order among them)
        for f in vendor_files:
            shutil.copyfile(f, Path(tmp) / f.name)
        for platform, path in found.items():
            (Path(tmp) / f"zz-hetero-{path.stem}.icd").write_text(f"{path}\n")
        os.environ["OCL_ICD_VENDORS"] = tmp
        result = cl.get_platforms()
    finally:
        os.environ.pop("OCL_ICD_VENDORS", None)
        shutil.rmtree(tmp, ignore_errors=True)
    REGISTERED.update(p.name for p in result if p.name in found)
    return result
