"""A corpus of hostile and damaged CIFAR-10 copies: every case ends in a one-line DataError that
names the file, or in a clean accept of data that passes validation, never another exception, and
never more memory than a 2 GiB address-space limit allows.

The cases are hand-crafted pickles (the memory bombs of the issue: zero-stride ndarray,
``_reconstruct`` with a huge shape, memo index 2**30, huge FRAME / BINBYTES lengths, quadratic
``_codecs.encode``), files that are not regular files, archive cases (links, sparse and device
members, missing and misplaced members, oversized members, decompression bombs, truncated and
CRC-damaged gzip), and deterministic byte flips of a valid archive and of a valid batch.

All cases run in ONE subprocess that imports numpy and trainable.cifar10 only (not Keras/TF) under
``resource.setrlimit(RLIMIT_AS, 2 GiB)`` and reports each outcome as JSON; the tests below then
check the outcome of each case.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import re
import struct
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_batches_dir

REPO = Path(__file__).resolve().parents[2]
BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
ROWS = 2  # images per batch in the corpus copies


# --------------------------------------------------------------------------------------------
# Hand-written pickle opcodes


def op_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)
    if -2**31 <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def op_str(s: str) -> bytes:
    raw = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def op_bytes(b: bytes) -> bytes:
    return (b"C" + bytes([len(b)]) if len(b) < 256 else b"B" + struct.pack("<I", len(b))) + b


def op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def op_list(items: list[bytes]) -> bytes:
    return b"](" + b"".join(items) + b"e"


NDARRAY = op_global("numpy", "ndarray")
RECONSTRUCT = op_global("numpy.core.multiarray", "_reconstruct")
FALSE, TRUE, NONE, REDUCE, BUILD = b"\x89", b"\x88", b"N", b"R", b"b"


def dtype_expr(typestr: str = "u1", order: str = "|", state: bytes | None = None) -> bytes:
    state = state if state is not None else op_tuple(op_int(3), op_str(order), NONE, NONE, NONE,
                                                     op_int(-1), op_int(-1), op_int(0))
    return op_global("numpy", "dtype") + op_tuple(op_str(typestr), FALSE, TRUE) + REDUCE + state + BUILD


def array_expr(shape: tuple[int, ...], raw: bytes | None = None, typestr: str = "u1", order: str = "|",
               recon_shape: tuple[int, ...] = (0,), raw_expr: bytes | None = None,
               dtype: bytes | None = None) -> bytes:
    """numpy's own pickle form: _reconstruct(ndarray, (0,), b'b') then BUILD with the state."""
    raw_expr = raw_expr if raw_expr is not None else op_bytes(raw)
    return (RECONSTRUCT + NDARRAY + op_tuple(*map(op_int, recon_shape)) + op_bytes(b"b") + b"\x87" + REDUCE
            + op_tuple(op_int(1), op_tuple(*map(op_int, shape)), dtype or dtype_expr(typestr, order),
                       FALSE, raw_expr) + BUILD)


PIXELS = bytes(range(256)) * (ROWS * 3072 // 256)
GOOD_DATA = array_expr((ROWS, 3072), PIXELS)
GOOD_LABELS = op_list([op_int(1), op_int(2)])


def batch(data: bytes = GOOD_DATA, labels: bytes = GOOD_LABELS, extra: bytes = b"",
          proto: int = 2) -> bytes:
    return (b"\x80" + bytes([proto]) + b"}(" + op_str("data") + data + op_str("labels") + labels + extra
            + b"u.")


def quadratic_encode() -> bytes:
    # one 100 KB string, memoised, then _codecs.encode'd 3000 times: O(file size squared) work
    text = op_str("a" * 100_000) + b"q\x01" + op_global("_codecs", "encode") + b"q\x02"
    call = b"h\x02h\x01" + op_str("latin1") + b"\x86" + REDUCE + b"0"
    return b"\x80\x02" + text + call * 3000 + b"00N."


def nested_pairs(depth: int, make_pair: bytes) -> bytes:
    return b"N" + make_pair * depth  # each step: DUP then pair -> 2**depth leaves by reference


def nested_lists(depth: int) -> bytes:
    # L[i] = [L[i-1], L[i-1]] by memo reference: 2**depth leaves, built in O(depth) bytes
    out = b"]q\x00"
    for i in range(1, depth + 1):
        out += b"0(h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"lq" + bytes([i])
    return out


def codec(text: str, encoding: str) -> bytes:
    return op_global("_codecs", "encode") + op_tuple(op_str(text), op_str(encoding)) + REDUCE


def forbidden(module: str, name: str, *args: bytes) -> bytes:
    return batch(data=op_global(module, name) + op_tuple(*args) + REDUCE)


def truncated(fraction: float) -> bytes:
    blob = batch()
    return blob[: int(len(blob) * fraction)]


BIG = 2**62
PICKLES: dict[str, tuple[Callable[[], bytes], str]] = {
    # -- memory bombs of the issue, and their relatives --
    "zero_stride_ndarray": (lambda: batch(data=NDARRAY + op_tuple(
        op_tuple(op_int(100_000), op_int(3072)), dtype_expr(), op_bytes(b"\0" * 16), op_int(0),
        op_tuple(op_int(0), op_int(0))) + REDUCE), "calling numpy.ndarray is not allowed"),
    "zero_stride_ndarray_stack_global": (lambda: b"\x80\x04}(" + b"\x8c\x04data" + b"\x8c\x05numpy"
                                         + b"\x8c\x07ndarray\x93" + op_tuple(op_tuple(op_int(100_000)))
                                         + REDUCE + b"u.", "calling numpy.ndarray is not allowed"),
    "zero_stride_100000_images_3_kb": (lambda: batch(
        data=NDARRAY + op_tuple(op_tuple(op_int(100_000), op_int(3072)), dtype_expr(), op_bytes(b"\0" * 8),
                                op_int(0), op_tuple(op_int(0), op_int(0))) + REDUCE,
        labels=NDARRAY + op_tuple(op_tuple(op_int(100_000)), dtype_expr("i8", "<"), op_bytes(b"\0" * 8),
                                  op_int(0), op_tuple(op_int(0))) + REDUCE),
        "calling numpy.ndarray is not allowed"),
    "reconstruct_100000_uninitialised_images": (lambda: batch(
        data=RECONSTRUCT + NDARRAY + op_tuple(op_int(100_000), op_int(3072)) + op_bytes(b"B") + b"\x87"
        + REDUCE,
        labels=RECONSTRUCT + NDARRAY + op_tuple(op_int(100_000)) + op_bytes(b"B") + b"\x87" + REDUCE),
        "_reconstruct must be called as _reconstruct.ndarray, .0,., b'b'."),
    "reconstruct_huge_shape_no_state": (lambda: batch(data=RECONSTRUCT + NDARRAY + op_tuple(
        op_int(100_000), op_int(3072)) + op_bytes(b"b") + b"\x87" + REDUCE), "_reconstruct must be called"),
    "reconstruct_2_40_elements": (lambda: batch(data=RECONSTRUCT + NDARRAY + op_tuple(op_int(2**40))
                                                + op_bytes(b"b") + b"\x87" + REDUCE),
                                  "_reconstruct must be called"),
    "state_declares_100000_rows_for_2": (lambda: batch(data=array_expr((100_000, 3072), PIXELS)),
                                         "declares shape .100000, 3072. .* carries 6144 bytes"),
    "state_shape_overflows_int64": (lambda: batch(data=array_expr((BIG, BIG), PIXELS)),
                                    "array declares shape"),
    "state_negative_dimension": (lambda: batch(data=array_expr((-1, 3072), PIXELS)),
                                 "shape must be a tuple of 1 to 2 non-negative integers"),
    "state_three_dimensions": (lambda: batch(data=array_expr((ROWS, 3, 1024), PIXELS)),
                               "shape must be a tuple of 1 to 2"),
    "memo_index_2_30": (lambda: b"\x80\x02Nr\x00\x00\x00\x40.", "memo index 1073741824 is beyond the file"),
    "memo_text_put_2_30": (lambda: b"\x80\x02Np1073741824\n.", "memo index 1073741824 is beyond the file"),
    "memo_get_never_stored": (lambda: b"\x80\x02j\x00\x00\x00\x40.", "memo index 1073741824 was never"),
    "frame_2_60_bytes": (lambda: b"\x80\x04\x95" + struct.pack("<Q", 2**60) + b"N.", "frame of .* runs past"),
    "binbytes_4_gib": (lambda: b"\x80\x03B\xff\xff\xff\xff" + b"x" * 64 + b".", "runs past the end"),
    "binbytes8_2_62": (lambda: b"\x80\x04\x8e" + struct.pack("<Q", BIG) + b"x.", "runs past the end"),
    "binunicode_4_gib": (lambda: b"\x80\x02X\xff\xff\xff\xff" + b"x" * 64 + b".", "runs past the end"),
    "binunicode8_2_62": (lambda: b"\x80\x04\x8d" + struct.pack("<Q", BIG) + b"x.", "runs past the end"),
    "bytearray8_2_62": (lambda: b"\x80\x05\x96" + struct.pack("<Q", BIG) + b"x.", "runs past the end"),
    "binstring_negative_length": (lambda: b"\x80\x02T" + struct.pack("<i", -5) + b"x.", "length of -5"),
    "short_binbytes_past_end": (lambda: b"\x80\x03C\xffab", "runs past the end"),
    "codecs_encode_punycode": (lambda: batch(data=codec("x" * 5000, "punycode")),
                               r"only allowed as _codecs.encode\(str, 'latin1'\)"),
    "codecs_encode_zlib": (lambda: batch(data=codec("x" * 5000, "zlib")), "only allowed as _codecs.encode"),
    "codecs_encode_quadratic": (quadratic_encode, "_codecs.encode output exceeds twice the file size"),
    "codecs_encode_not_latin1": (lambda: batch(data=codec("\u0100" * 10, "latin1")), "text is not latin1"),
    "long4_one_megabyte": (lambda: b"\x80\x02\x8b" + struct.pack("<I", 2**20) + b"\x01" * 2**20 + b".",
                           "does not fit in 64 bits"),
    "text_int_5000_digits": (lambda: b"I" + b"9" * 5000 + b"\n.", "unterminated text argument"),
    "text_long_200_digits": (lambda: b"L" + b"9" * 200 + b"L\n.", "does not fit in 64 bits"),
    "two_hundred_thousand_marks": (lambda: b"\x80\x02" + b"(" * 200_000 + b"N.", "stack does not end"),
    "opcode_flood": (lambda: b"\x80\x02" + b"N0" * 600_000 + b"N.", "more than 1000000 pickle opcodes"),
    "exponential_tuple_as_key": (lambda: b"\x80\x02}" + nested_pairs(80, b"2\x86") + b"Ns.",
                                 "dict key of type tuple is not allowed"),
    "exponential_nested_label_lists": (lambda: batch(labels=nested_lists(60)),
                                       "'labels' must be a list of integers"),
    # -- globals other than the numpy reconstruct ones --
    "global_os_system": (lambda: forbidden("os", "system", op_str("true")), "forbidden global os.system"),
    "global_posix_system": (lambda: forbidden("posix", "system", op_str("true")), "forbidden global posix"),
    "global_builtins_eval": (lambda: forbidden("builtins", "eval", op_str("1")), "forbidden global builtins"),
    "global_builtins_getattr": (lambda: forbidden("builtins", "getattr", NONE, op_str("x")),
                                "forbidden global builtins.getattr"),
    "global_subprocess_popen": (lambda: forbidden("subprocess", "Popen", op_str("true")), "forbidden global"),
    "global_numpy_frombuffer": (lambda: forbidden("numpy", "frombuffer", op_bytes(b"ab")),
                                "forbidden global numpy.frombuffer"),
    "global_numpy_load": (lambda: forbidden("numpy", "load", op_str("/etc/passwd")), "forbidden global"),
    "global_copyreg_reconstructor": (lambda: forbidden("copyreg", "_reconstructor", NONE),
                                     "forbidden global copyreg"),
    "global_stack_global_os_system": (lambda: b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R.",
                                      "forbidden global os.system"),
    "global_non_utf8_name": (lambda: b"\x80\x02c\xff\xfe\nx\n.", "malformed pickle argument"),
    "reconstruct_of_dtype_class": (lambda: batch(data=RECONSTRUCT + op_global("numpy", "dtype")
                                                 + op_tuple(op_int(0)) + op_bytes(b"b") + b"\x87" + REDUCE),
                                   "_reconstruct must be called"),
    "reduce_with_list_arguments": (lambda: b"\x80\x02" + op_global("_codecs", "encode") + b"]R.",
                                   "REDUCE arguments must be a tuple"),
    "build_of_numpy_ndarray_class": (lambda: b"\x80\x02" + NDARRAY + b"}b.", "BUILD of a _NDArrayClass"),
    # -- dtypes and object arrays --
    "object_dtype": (lambda: batch(data=array_expr((ROWS, 3072), PIXELS, typestr="O")),
                     "dtype 'O' is not allowed"),
    "object_array_payload": (lambda: batch(data=array_expr((ROWS,), raw_expr=op_list([NONE, NONE]))),
                             "object arrays are not allowed"),
    "data_int64": (lambda: batch(data=array_expr((ROWS, 3072), PIXELS * 8, typestr="i8", order="<")),
                   "'data' must be a uint8 array, found int64"),
    "data_float32": (lambda: batch(data=array_expr((ROWS, 3072), PIXELS * 4, typestr="f4", order="<")),
                     "dtype 'f4' is not allowed"),
    "data_bigendian_uint16": (lambda: batch(data=array_expr((ROWS, 3072), PIXELS * 2, typestr="u2",
                                                            order=">")), "found >u2"),
    "structured_dtype": (lambda: batch(data=array_expr((ROWS, 3072), PIXELS, dtype=dtype_expr(
        state=op_tuple(op_int(3), op_str("|"), NONE, op_tuple(op_str("a")), NONE, op_int(-1), op_int(-1),
                       op_int(0))))), "only plain integer dtypes"),
    "dtype_with_metadata": (lambda: batch(data=array_expr((ROWS, 3072), PIXELS, dtype=dtype_expr(
        state=op_tuple(op_int(4), op_str("|"), NONE, NONE, NONE, op_int(-1), op_int(-1), op_int(0),
                       b"}")))), "unexpected sizes, flags or metadata"),
    "dtype_byte_order_unknown": (lambda: batch(data=array_expr((ROWS, 3072), PIXELS, order="!")),
                                 "only plain integer dtypes"),
    "dtype_state_missing": (lambda: batch(data=array_expr((ROWS, 3072), PIXELS, dtype=op_global(
        "numpy", "dtype") + op_tuple(op_str("u1"), FALSE, TRUE) + REDUCE)), "not a complete numpy.dtype"),
    "scalar_wrong_size": (lambda: batch(labels=op_list([op_global("numpy.core.multiarray", "scalar")
                                                        + op_tuple(dtype_expr("i8", "<"), op_bytes(b"abc"))
                                                        + REDUCE])), "numpy scalar of <i8 needs 8 bytes"),
    "frombuffer_size_mismatch": (lambda: batch(data=op_global("numpy._core.numeric", "_frombuffer")
                                               + op_tuple(op_bytes(b"x" * 10), dtype_expr(),
                                                          op_tuple(op_int(ROWS), op_int(3072)), op_str("C"))
                                               + REDUCE), "declares shape"),
    "frombuffer_order_k": (lambda: batch(data=op_global("numpy._core.numeric", "_frombuffer")
                                         + op_tuple(op_bytes(PIXELS), dtype_expr(),
                                                    op_tuple(op_int(ROWS), op_int(3072)), op_str("K"))
                                         + REDUCE), "_frombuffer must be called"),
    # -- the CIFAR-10 layout --
    "data_one_dimensional": (lambda: batch(data=array_expr((ROWS * 3072,), PIXELS)), r"shape \(N, 3072\)"),
    "data_1024_columns": (lambda: batch(data=array_expr((ROWS * 3, 1024), PIXELS)), r"shape \(N, 3072\)"),
    "data_zero_rows": (lambda: batch(data=array_expr((0, 3072), b""), labels=b"]"), "holds 1 to 10000"),
    "labels_fewer_than_images": (lambda: batch(labels=op_list([op_int(1)])), "2 images but 1 labels"),
    "labels_more_than_images": (lambda: batch(labels=op_list([op_int(1)] * 3)), "2 images but 3 labels"),
    "label_10": (lambda: batch(labels=op_list([op_int(1), op_int(10)])), r"labels must be in 0\.\.9"),
    "label_negative": (lambda: batch(labels=op_list([op_int(-1), op_int(1)])), r"labels must be in 0\.\.9"),
    "label_2_40": (lambda: batch(labels=op_list([op_int(2**40), op_int(1)])), r"labels must be in 0\.\.9"),
    "labels_bools": (lambda: batch(labels=op_list([TRUE, FALSE])), "'labels' must be a list of integers"),
    "labels_floats": (lambda: batch(labels=op_list([b"G" + struct.pack(">d", 1.0)] * 2)),
                      "'labels' must be a list of integers"),
    "labels_strings": (lambda: batch(labels=op_list([op_str("1"), op_str("2")])),
                       "'labels' must be a list of integers"),
    "labels_2d_array": (lambda: batch(labels=array_expr((ROWS, 1), b"\1" * 8 + b"\2" * 8, "i8", "<")),
                        "'labels' must be a list of integers"),
    "labels_uint64_2_63": (lambda: batch(labels=array_expr((ROWS,), b"\0" * 7 + b"\x80" + b"\1" + b"\0" * 7,
                                                           "u8", "<")), r"labels must be in 0\.\.9"),
    "labels_missing": (lambda: b"\x80\x02}(" + op_str("data") + GOOD_DATA + b"u.",
                       "missing 'data' or 'labels'"),
    "data_missing": (lambda: b"\x80\x02}(" + op_str("labels") + GOOD_LABELS + b"u.", "missing 'data' or"),
    "top_level_list": (lambda: b"\x80\x02]N\x85a.", "expected a dict batch, found list"),
    "top_level_none": (lambda: b"\x80\x02N.", "expected a dict batch, found NoneType"),
    "list_as_dict_key": (lambda: b"\x80\x02}]Ns.", "dict key of type list is not allowed"),
    # -- damaged pickles --
    "truncated_at_10_percent": (lambda: truncated(0.1), "runs past the end|ends before the pickle STOP"),
    "truncated_at_50_percent": (lambda: truncated(0.5), "runs past the end|ends before the pickle STOP"),
    "truncated_last_byte": (lambda: truncated(0.9999), "ends before the pickle STOP"),
    "trailing_garbage": (lambda: batch() + b"garbage", "7 bytes of trailing data"),
    "empty_file": (lambda: b"", "ends before the pickle STOP"),
    "protocol_6": (lambda: b"\x80\x06N.", "unsupported pickle protocol 6"),
    "opcode_inst": (lambda: b"(ios\nsystem\n.", "unsupported pickle opcode b'i'"),
    "opcode_obj": (lambda: b"(No.", "unsupported pickle opcode b'o'"),
    "opcode_newobj": (lambda: b"\x80\x02N)\x81.", r"unsupported pickle opcode b'\\x81'"),
    "opcode_newobj_ex": (lambda: b"\x80\x04N)}\x92.", r"unsupported pickle opcode b'\\x92'"),
    "opcode_ext1": (lambda: b"\x80\x02\x82\x01.", r"unsupported pickle opcode b'\\x82'"),
    "opcode_persid": (lambda: b"Pfoo\n.", "unsupported pickle opcode b'P'"),
    "opcode_binpersid": (lambda: b"\x80\x02NQ.", "unsupported pickle opcode b'Q'"),
    "opcode_next_buffer": (lambda: b"\x80\x05\x97.", r"unsupported pickle opcode b'\\x97'"),
    "opcode_empty_set": (lambda: b"\x80\x04\x8f.", r"unsupported pickle opcode b'\\x8f'"),
    "build_on_a_dict": (lambda: b"\x80\x02}}b.", "BUILD of a dict is not allowed"),
    "build_array_twice": (lambda: batch(data=GOOD_DATA + op_tuple(
        op_int(1), op_tuple(op_int(ROWS)), dtype_expr(), FALSE, op_bytes(b"ab")) + BUILD),
                          "BUILD of a PickledArray is not allowed"),
    "setitems_odd_count": (lambda: b"\x80\x02}(Nu.", "odd number of items"),
    "reduce_on_empty_stack": (lambda: b"\x80\x02R.", "stack underflow"),
    "append_to_none": (lambda: b"\x80\x02NNa.", "APPEND needs a list"),
    "pop_mark_without_mark": (lambda: b"\x80\x021N.", "MARK missing"),
    "string_not_quoted": (lambda: b"Sabc\n.", "STRING argument is not quoted"),
    "binunicode_invalid_utf8": (lambda: b"\x80\x02X\x02\x00\x00\x00\xc3\x28.", "malformed pickle argument"),
    "float_text_garbage": (lambda: b"Fnot-a-float\n.", "malformed pickle argument"),
}

# Inputs that are odd but harmless: they must load and pass validation.
ACCEPTED_PICKLES: dict[str, Callable[[], bytes]] = {
    "control_handcrafted_batch": batch,
    "extra_non_utf8_key": lambda: batch(extra=op_bytes(b"\xff\xfe") + NONE),
    "labels_as_numpy_scalars": lambda: batch(labels=op_list([
        op_global("numpy.core.multiarray", "scalar") + op_tuple(dtype_expr("i8", "<"),
                                                                op_bytes(bytes([v]) + b"\0" * 7))
        + REDUCE for v in (1, 2)])),
}


# --------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    expect: str | None  # a regex the DataError must match; None where accepting is also fine
    accept_ok: bool = False  # a clean accept of valid data is an allowed outcome
    must_accept: bool = False
    same_digest: bool = False  # when accepted, the data must be the reference copy's


def _link_template(template: Path, out: Path, skip: str | None = None) -> Path:
    out.mkdir(parents=True)
    for name in BATCHES:
        if name != skip:
            os.link(template / name, out / name)
    return out


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, type_: bytes = tarfile.REGTYPE, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _members(template: Path, replace: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] | None = None,
             prefix: str = "cifar-10-batches-py/") -> list[tuple[tarfile.TarInfo, bytes | None]]:
    replace = replace or {}
    out: list[tuple[tarfile.TarInfo, bytes | None]] = [(_info(prefix.rstrip("/"), tarfile.DIRTYPE), None)]
    for name in BATCHES:
        if name in replace:
            out.extend(replace[name])
        else:
            out.append((_info(prefix + name), (template / name).read_bytes()))
    return out


def _gnu_sparse_member(name: str, realsize: int) -> bytes:
    """An old-GNU sparse header ('S') declaring ``realsize`` bytes, 512 of them stored."""
    header = bytearray(_info(name, tarfile.GNUTYPE_SPARSE, size=512).tobuf(tarfile.GNU_FORMAT))
    header[386:398] = b"%011o\0" % (realsize - 512)  # one sparse region at the very end
    header[398:410] = b"%011o\0" % 512
    header[483:495] = b"%011o\0" % realsize
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + b"\x01" * 512


def _bomb_member(name: str, size: int) -> Callable[[gzip.GzipFile], None]:
    def write(gz: gzip.GzipFile) -> None:
        gz.write(_info(name, size=size).tobuf(tarfile.GNU_FORMAT))
        chunk = b"\0" * 2**20
        for _ in range(size // len(chunk)):
            gz.write(chunk)
    return write


def _flip(blob: bytes, pos: int, mask: int = 0x55) -> bytes:
    out = bytearray(blob)
    out[pos] ^= mask
    return bytes(out)


def _flip_positions(length: int, head: int = 12, tail: int = 8, count: int = 48) -> list[int]:
    inner = np.linspace(head, length - tail - 1, count - head - tail).astype(int).tolist()
    positions = sorted(set([*range(head), *inner, *range(length - tail, length)]))
    assert len(positions) == count
    return positions


def case_specs() -> list[Case]:
    """The case list (cheap: no files); build_corpus writes the files."""
    cases = [Case(f"pickle:{k}", "pickle", expect) for k, (_, expect) in PICKLES.items()]
    cases += [Case(f"pickle:{k}", "pickle", None, accept_ok=True, must_accept=True) for k in ACCEPTED_PICKLES]
    cases += [Case(f"file:{k}", "file", expect) for k, expect in FILE_CASES.items()]
    cases += [Case(f"archive:{k}", "archive", expect, accept_ok=expect is None, must_accept=expect is None,
                   same_digest=expect is None) for k, expect in ARCHIVE_EXPECT.items()]
    cases += [Case(f"flip:archive#{i:02d}", "flip-archive", None, accept_ok=True, same_digest=True)
              for i in range(FLIP_ARCHIVE_COUNT)]
    cases += [Case(f"flip:pickle@{p}", "flip-pickle", None, accept_ok=True) for p in FLIP_PICKLE_POSITIONS]
    return cases


FILE_CASES = {
    "fifo": "not a regular file",
    "directory": "not a regular file",
    "symlink_to_dev_zero": "not a regular file",
    "sparse_65_mib": "67108865 bytes, more than the 67108864",
    "sparse_64_gib": "68719476736 bytes, more than the",
    "symlink_loop": "cannot be opened .Too many levels of symbolic links",
    "dangling_symlink": "cannot be opened .No such file or directory",
    "missing_batch": "missing; a cifar-10-batches-py directory holds",
}

ARCHIVE_EXPECT: dict[str, str | None] = {
    "symlink_member": "data_batch_1: is a symbolic link, not a regular file",
    "hardlink_member": "data_batch_1: is a hard link, not a regular file",
    "gnu_sparse_member": "is a sparse file; sparse members are not allowed",
    "pax_sparse_1_0_member": "sparse members are not allowed",
    "pax_sparse_0_1_member": "sparse members are not allowed",
    "char_device_member": "is a character device",
    "block_device_member": "is a block device",
    "fifo_member": "is a FIFO",
    "directory_member": "is a directory",
    "missing_member": "archive lacks cifar-10-batches-py/data_batch_3;",
    "only_traversal_names": r"archive lacks .*found \.\./cifar-10-batches-py/data_batch_1",
    "only_absolute_names": "archive lacks",
    "traversal_names_beside_valid_ones": None,
    "duplicate_member": "data_batch_2: appears twice in the archive",
    "oversized_member": "67108865 bytes, more than the 67108864 allowed",
    "decompression_bomb": "decompresses to more than 268435456 bytes",
    "truncated_gzip_half": "not a readable tar.gz archive",
    "truncated_gzip_trailer": "not a readable tar.gz archive",
    "gzip_crc_corrupted": "not a readable tar.gz archive .*CRC",
    "gzip_length_corrupted": "not a readable tar.gz archive",
    "gzip_trailing_garbage": "not a readable tar.gz archive",
    "random_bytes": "not a readable tar.gz archive",
    "plain_tar": None,
    "bzip2_tar": None,
    "xz_tar": "xz-compressed archives are not supported",
    "bzip2_corrupted": "not a readable tar.gz archive",
    "too_many_members": "more than 1000 members",
    "huge_pax_header": "extended tar header of .* bytes",
    "chained_pax_headers": "more than 4 chained extended tar headers",
    "huge_gnu_longname": "extended tar header of 10485760 bytes",
    "control_chars_in_name": r"archive lacks cifar-10-batches-py/data_batch_1 .found evil\\n\\x1b\[31m/data",
    "zero_stride_pickle_member": "data_batch_2: not a valid CIFAR-10 batch pickle .*numpy.ndarray",
    "memo_bomb_member": "data_batch_5: not a valid CIFAR-10 batch pickle .*memo index",
    "archive_file_300_mib": "bytes, more than the 268435456",
    "truncated_inner_tar": "not a readable tar.gz archive|truncated member|archive lacks",
    "pax_size_override": "70000000 bytes, more than the",
    "directory_named_like_archive": "holds neither",
}

FLIP_ARCHIVE_COUNT = 48  # 12 in the gzip header, 8 in its CRC/length trailer, 28 spread between
FLIP_PICKLE_POSITIONS = sorted(set(list(range(0, 120, 3)) + [200, 260, 330, 6200, 6250, 6300]))


def _reference(root: Path) -> tuple[Path, bytes]:
    template = make_batches_dir(root / "template", n_per_batch=ROWS)
    archive = _tar_bytes(_members(template))
    return template, archive


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def build_corpus(root: Path) -> tuple[list[dict], dict[str, Path]]:
    """Write every case under ``root``; returns the manifest (id, path, target) and reference paths."""
    template, tar_ref = _reference(root)
    gz_ref = _gz(tar_ref)
    manifest: list[dict] = []

    def add(case_id: str, path: Path, target: Path) -> None:
        manifest.append({"id": case_id, "path": str(path), "target": str(target)})

    def dir_case(case_id: str, content: bytes | None, name: str = "data_batch_2") -> Path:
        out = _link_template(template, root / "dirs" / case_id.replace(":", "_"), skip=name)
        if content is not None:
            (out / name).write_bytes(content)
        add(case_id, out, out / name)
        return out

    for key, (make, _) in PICKLES.items():
        dir_case(f"pickle:{key}", make())
    for key, make in ACCEPTED_PICKLES.items():
        dir_case(f"pickle:{key}", make())

    # -- not regular files --
    d = dir_case("file:fifo", None)
    os.mkfifo(d / "data_batch_2")
    d = dir_case("file:directory", None)
    (d / "data_batch_2").mkdir()
    d = dir_case("file:symlink_to_dev_zero", None)
    (d / "data_batch_2").symlink_to("/dev/zero")
    for key, size in (("sparse_65_mib", 64 * 2**20 + 1), ("sparse_64_gib", 64 * 2**30)):
        d = dir_case(f"file:{key}", None)
        with open(d / "data_batch_2", "wb") as fh:
            fh.truncate(size)
    d = dir_case("file:symlink_loop", None)
    (d / "data_batch_2").symlink_to(d / "data_batch_2")
    d = dir_case("file:dangling_symlink", None)
    (d / "data_batch_2").symlink_to(d / "nowhere")
    dir_case("file:missing_batch", None)

    # -- archives --
    adir = root / "archives"
    adir.mkdir()

    def archive_case(key: str, content: bytes | None = None, writer: Callable[[Path], None] | None = None,
                     name: str = "cifar-10-python.tar.gz") -> Path:
        path = adir / key / name
        path.parent.mkdir()
        if writer is not None:
            writer(path)
        else:
            path.write_bytes(content)
        add(f"archive:{key}", path, path)
        return path

    p = "cifar-10-batches-py/"
    good = {n: (template / n).read_bytes() for n in BATCHES}

    def tgz(replace: dict, **kw) -> bytes:
        return _gz(_tar_bytes(_members(template, replace), **kw))

    archive_case("symlink_member", tgz({"data_batch_1": [(_info(p + "data_batch_1", tarfile.SYMTYPE,
                                                                 linkname="/etc/passwd"), None)]}))
    archive_case("hardlink_member", tgz({"data_batch_1": [(_info(p + "data_batch_1", tarfile.LNKTYPE,
                                                                  linkname=p + "data_batch_2"), None)]}))
    tar = _tar_bytes(_members(template, {"data_batch_1": []}))
    archive_case("gnu_sparse_member", _gz(_gnu_sparse_member(p + "data_batch_1", 2**40) + tar))
    archive_case("pax_sparse_1_0_member", tgz({"data_batch_1": [(_info(p + "data_batch_1", pax_headers={
        "GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": p + "data_batch_1",
        "GNU.sparse.realsize": str(2**40)}), b"1\n0\n512\n".ljust(512, b"\0") + b"\1" * 512)]},
        fmt=tarfile.PAX_FORMAT))
    archive_case("pax_sparse_0_1_member", tgz({"data_batch_1": [(_info(p + "data_batch_1", pax_headers={
        "GNU.sparse.map": f"{2**40 - 512},512", "GNU.sparse.size": str(2**40),
        "GNU.sparse.name": p + "data_batch_1"}), b"\1" * 512)]}, fmt=tarfile.PAX_FORMAT))
    for key, type_ in (("char_device_member", tarfile.CHRTYPE), ("block_device_member", tarfile.BLKTYPE),
                       ("fifo_member", tarfile.FIFOTYPE), ("directory_member", tarfile.DIRTYPE)):
        archive_case(key, tgz({"data_batch_1": [(_info(p + "data_batch_1", type_), None)]}))
    archive_case("missing_member", tgz({"data_batch_3": []}))
    archive_case("only_traversal_names",
                 _gz(_tar_bytes(_members(template, prefix="../cifar-10-batches-py/"))))
    archive_case("only_absolute_names", _gz(_tar_bytes(_members(template, prefix="/cifar-10-batches-py/"))))
    archive_case("traversal_names_beside_valid_ones", tgz({"test_batch": [
        (_info("../../data_batch_1"), b"not a batch"), (_info("/etc/test_batch"), b"x"),
        (_info(p + "test_batch"), good["test_batch"])]}))
    archive_case("duplicate_member",
                 tgz({"data_batch_2": [(_info(p + "data_batch_2"), good["data_batch_2"])] * 2}))
    archive_case("oversized_member", tgz({"data_batch_1": [(_info(p + "data_batch_1"),
                                                             b"\0" * (64 * 2**20 + 1))]}))

    def bomb(path: Path) -> None:
        with gzip.GzipFile(path, "wb", compresslevel=1, mtime=0) as gz:
            _bomb_member("junk", 300 * 2**20)(gz)
            gz.write(tar_ref)
    archive_case("decompression_bomb", writer=bomb)
    archive_case("truncated_gzip_half", gz_ref[: len(gz_ref) // 2])
    archive_case("truncated_gzip_trailer", gz_ref[:-4])
    archive_case("gzip_crc_corrupted", _flip(gz_ref, len(gz_ref) - 6))
    archive_case("gzip_length_corrupted", _flip(gz_ref, len(gz_ref) - 2))
    archive_case("gzip_trailing_garbage", gz_ref + b"garbage after the stream")
    archive_case("random_bytes", np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    archive_case("plain_tar", tar_ref)
    archive_case("bzip2_tar", bz2.compress(tar_ref))
    archive_case("xz_tar", lzma.compress(tar_ref))
    archive_case("bzip2_corrupted", _flip(bz2.compress(tar_ref), 5000))
    archive_case("too_many_members", _gz(_tar_bytes([(_info(f"junk/{i}"), b"") for i in range(1001)]
                                                    + _members(template))))
    archive_case("huge_pax_header", tgz({"data_batch_1": [(_info(p + "data_batch_1",
                                                                 pax_headers={"comment": "x" * 70_000}),
                                                           good["data_batch_1"])]}, fmt=tarfile.PAX_FORMAT))
    record = b"13 comment=x\n".ljust(512, b"\0")
    pax = b"".join(_info(f"pax{i}", tarfile.XHDTYPE, size=13).tobuf(tarfile.GNU_FORMAT) + record
                   for i in range(6))
    archive_case("chained_pax_headers", _gz(pax + tar_ref))
    longname = _info("././@LongLink", tarfile.GNUTYPE_LONGNAME, size=10 * 2**20).tobuf(tarfile.GNU_FORMAT)
    archive_case("huge_gnu_longname", _gz(longname + b"\0" * (10 * 2**20) + tar_ref))
    archive_case("control_chars_in_name", _gz(_tar_bytes(_members(
        template, {"data_batch_1": [(_info("evil\n\x1b[31m/data_batch_1"), good["data_batch_1"])]}))))
    archive_case("zero_stride_pickle_member", tgz({"data_batch_2": [(_info(p + "data_batch_2"),
                                                                     PICKLES["zero_stride_ndarray"][0]())]}))
    archive_case("memo_bomb_member", tgz({"data_batch_5": [(_info(p + "data_batch_5"),
                                                            PICKLES["memo_index_2_30"][0]())]}))

    def sparse_archive(path: Path) -> None:
        with open(path, "wb") as fh:
            fh.truncate(300 * 2**20)
    archive_case("archive_file_300_mib", writer=sparse_archive)
    cut = tar_ref.index(b"data_batch_3") + 512 + 3000
    archive_case("truncated_inner_tar", _gz(tar_ref[:cut]))
    archive_case("pax_size_override", tgz({"data_batch_1": [(_info(p + "data_batch_1",
                                                                   pax_headers={"size": "70000000"}),
                                                             good["data_batch_1"])]}, fmt=tarfile.PAX_FORMAT))
    fake = adir / "directory_named_like_archive" / "cifar-10-python.tar.gz"
    fake.mkdir(parents=True)
    add("archive:directory_named_like_archive", fake, fake)

    # -- byte flips --
    reference = adir / "reference.tar.gz"
    reference.write_bytes(gz_ref)
    for i, pos in enumerate(_flip_positions(len(gz_ref))):
        path = adir / f"flip_{pos}.tar.gz"
        path.write_bytes(_flip(gz_ref, pos))
        add(f"flip:archive#{i:02d}", path, path)
    base = pickle.dumps({b"data": np.frombuffer(PIXELS * 3, np.uint8)[:ROWS * 3072].reshape(ROWS, 3072),
                         b"labels": [1, 2], b"filenames": [b"a.png", b"b.png"]}, protocol=2)
    for pos in FLIP_PICKLE_POSITIONS:
        dir_case(f"flip:pickle@{pos}", _flip(base, pos))
    return manifest, {"reference": reference}


RUNNER = r"""
import json, resource, sys, traceback
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
import numpy as np
from trainable.cifar10 import DataError, read_cifar10

def valid(x, y):
    return (x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (32, 32, 3) and y.dtype == np.int64
            and y.shape == (len(x),) and len(x) > 0 and int(y.min()) >= 0 and int(y.max()) <= 9)

manifest = json.load(open(sys.argv[1]))
out = {}
for case in manifest:
    try:
        copy = read_cifar10(case["path"])
    except DataError as exc:
        out[case["id"]] = {"outcome": "DataError", "message": str(exc)}
    except BaseException as exc:  # MemoryError, RecursionError, anything: reported, never hidden
        out[case["id"]] = {"outcome": type(exc).__name__,
                           "message": "".join(traceback.format_exception(exc))[-3000:]}
    else:
        out[case["id"]] = {"outcome": "accepted", "valid": bool(valid(*copy.train) and valid(*copy.test)),
                           "digest": copy.digest}
    copy = None
reference = read_cifar10(sys.argv[2])
out["__reference_digest__"] = reference.digest
out["__heavy_modules__"] = sorted(m for m in ("keras", "tensorflow", "torch", "jax") if m in sys.modules)
out["__maxrss_kib__"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
json.dump(out, open(sys.argv[3], "w"))
"""

CASES = case_specs()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[dict, dict[str, dict]]:
    root = tmp_path_factory.mktemp("corpus")
    manifest, refs = build_corpus(root)
    (root / "manifest.json").write_text(json.dumps(manifest))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(root / "manifest.json"), str(refs["reference"]),
                           str(root / "results.json")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"corpus subprocess died (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    results = json.loads((root / "results.json").read_text())
    return results, {m["id"]: m for m in manifest}


def test_corpus_is_large_and_varied():
    groups = {c.group for c in CASES}
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)
    assert groups == {"pickle", "file", "archive", "flip-archive", "flip-pickle"}
    assert sum(c.group == "flip-archive" for c in CASES) >= 40
    assert sum(c.expect is not None for c in CASES) >= 100  # hostile cases with a known refusal


def test_corpus_runs_without_keras_and_within_the_memory_limit(corpus):
    results, _ = corpus
    assert results["__heavy_modules__"] == []
    assert results["__maxrss_kib__"] < 2 * 2**20  # under the 2 GiB address-space limit


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_ends_in_a_one_line_data_error_or_a_clean_accept(corpus, case: Case):
    results, manifest = corpus
    got = results[case.id]
    target = manifest[case.id]["target"]
    if got["outcome"] == "accepted":
        assert case.accept_ok, f"accepted hostile input that should be refused ({case.expect})"
        assert got["valid"], "accepted data that fails validation"
        if case.same_digest:
            assert got["digest"] == results["__reference_digest__"], "silently loaded corrupted data"
        return
    assert not case.must_accept, f"refused a valid copy: {got['message']}"
    assert got["outcome"] == "DataError", f"{got['outcome']} instead of DataError:\n{got['message']}"
    message = got["message"]
    assert "\n" not in message and len(message) < 1000, message
    where, _, rest = message.partition(": ")
    assert target in where, f"message does not name {target}: {message}"
    assert "; " in rest, f"message has no fix after '; ': {message}"
    if case.expect is not None:
        assert re.search(case.expect, message), f"expected /{case.expect}/ in: {message}"
