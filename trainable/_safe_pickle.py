"""A pickle reader for CIFAR-10 batches that runs no code and allocates only what the file pays for.

``pickle.Unpickler`` with a ``find_class`` allow-list still trusts every size a file declares:
``numpy.ndarray(shape, dtype, buffer, offset, strides)`` with zero strides turns 3 KB into 100,000
images, ``_reconstruct(ndarray, shape, ...)`` allocates an arbitrary shape up front, a memo index of
2**30 or a huge FRAME/BINBYTES length asks for gigabytes, and ``_codecs.encode`` with another codec
(or called again and again on one memoised string) is quadratic. This module is a small pickle
virtual machine instead: it understands the opcodes of protocols 0-5 that a CIFAR-10 batch needs,
never imports or calls anything, and rebuilds numpy arrays itself from a buffer whose length must
equal the declared shape times the item size, so no array is bigger than the bytes in the file.

Limits: at most :data:`MAX_OPS` opcodes; integers fit in 64 bits; memo indices and frame/string
lengths cannot exceed the file; dict keys are scalars; arrays are 1-D or 2-D of an integer dtype;
``_codecs.encode`` accepts only ``latin1`` and a total output of at most twice the file size.
Every refusal raises :class:`PickleRefused` with a one-line reason.
"""

from __future__ import annotations

import codecs
import struct
import types
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_OPS = 1_000_000  # a protocol-0 CIFAR-10 batch needs about 50,000
MAX_INT = 2**63  # integers must satisfy -MAX_INT <= v < MAX_INT
ARRAY_TYPES = ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8")  # integer dtypes only: no objects
MAX_ARRAY_NDIM = 2
_VIEW_FROM = 4096  # byte strings this long are returned as memoryviews of the input


class PickleRefused(Exception):
    """The bytes are not a pickle this reader accepts; the message (one line) says why."""


class PickledArray:
    """A numpy array rebuilt from the pickle; ``array`` stays None until its state arrives."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray | None = None) -> None:
        self.array = array


class _PendingDType:
    """``numpy.dtype(typestr, False, True)`` before its BUILD state (byte order) arrives."""

    __slots__ = ("typestr", "dtype")

    def __init__(self, typestr: str) -> None:
        self.typestr = typestr
        self.dtype: np.dtype | None = None


class _NDArrayClass:
    """Stands for ``numpy.ndarray``: only usable as the first argument of ``_reconstruct``."""


_NDARRAY = _NDArrayClass()


def _text(value: Any, what: str) -> str:
    """A short ASCII string that may come as str (protocol 3+) or bytes (Python 2 pickles)."""
    if isinstance(value, bytes) and len(value) <= 16:
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            pass
    elif isinstance(value, str) and len(value) <= 16:
        return value
    raise PickleRefused(f"{what} must be a short string, found {type(value).__name__}")


def _shape(value: Any) -> tuple[int, ...]:
    if (not isinstance(value, tuple) or not 1 <= len(value) <= MAX_ARRAY_NDIM
            or not all(type(v) is int and v >= 0 for v in value)):
        raise PickleRefused(f"array shape must be a tuple of 1 to {MAX_ARRAY_NDIM} non-negative "
                            f"integers")
    return value


def _finished_dtype(value: Any) -> np.dtype:
    if not isinstance(value, _PendingDType) or value.dtype is None:
        raise PickleRefused("array dtype is not a complete numpy.dtype")
    return value.dtype


def _make_array(raw: Any, dtype: np.dtype, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    """A read-only view of ``raw``; the declared size must match the bytes exactly."""
    if isinstance(raw, list):
        raise PickleRefused("object arrays are not allowed")
    if not isinstance(raw, (bytes, memoryview)):
        raise PickleRefused(f"array data must be bytes, found {type(raw).__name__}")
    count = 1
    for dim in shape:
        count *= dim
    if count * dtype.itemsize != len(raw):
        raise PickleRefused(f"array declares shape {shape} of {dtype.str} ({count * dtype.itemsize} "
                            f"bytes) but carries {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")


# -- the allowed globals: each takes the REDUCE argument tuple --------------------------------


def _reconstruct(reader: _Reader, args: tuple) -> PickledArray:
    # numpy's own form is _reconstruct(ndarray, (0,), b'b'); any other shape would allocate.
    if len(args) != 3 or args[0] is not _NDARRAY or args[1] != (0,) or args[2] not in (b"b", "b"):
        raise PickleRefused("_reconstruct must be called as _reconstruct(ndarray, (0,), b'b')")
    return PickledArray()


def _frombuffer(reader: _Reader, args: tuple) -> PickledArray:
    # protocol 5: numpy._core.numeric._frombuffer(buffer, dtype, shape, order)
    if len(args) != 4 or args[3] not in ("C", "F"):
        raise PickleRefused("_frombuffer must be called as _frombuffer(buffer, dtype, shape, 'C'|'F')")
    return PickledArray(_make_array(args[0], _finished_dtype(args[1]), _shape(args[2]), args[3] == "F"))


def _dtype(reader: _Reader, args: tuple) -> _PendingDType:
    if len(args) != 3:
        raise PickleRefused("numpy.dtype must be called with 3 arguments")
    typestr = _text(args[0], "dtype")
    if typestr not in ARRAY_TYPES:
        raise PickleRefused(f"dtype {typestr!r} is not allowed (integer dtypes only)")
    return _PendingDType(typestr)


def _scalar(reader: _Reader, args: tuple) -> int:
    if len(args) != 2:
        raise PickleRefused("numpy scalar must be called with (dtype, bytes)")
    dtype = _finished_dtype(args[0])
    raw = args[1]
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise PickleRefused(f"numpy scalar of {dtype.str} needs {dtype.itemsize} bytes")
    return int(np.frombuffer(raw, dtype=dtype)[0])


def _codecs_encode(reader: _Reader, args: tuple) -> bytes:
    # How protocols 0-2 spell bytes: _codecs.encode(text, 'latin1'). Other codecs are refused
    # (some are quadratic, some decompress); the total output is bounded by the file size.
    if len(args) != 2 or not isinstance(args[0], str) or args[1] != "latin1":
        raise PickleRefused("_codecs.encode is only allowed as _codecs.encode(str, 'latin1')")
    reader.encoded += len(args[0])
    if reader.encoded > 2 * len(reader.buf) + 1024:
        raise PickleRefused("_codecs.encode output exceeds twice the file size")
    try:
        return args[0].encode("latin1")
    except UnicodeEncodeError:
        raise PickleRefused("_codecs.encode text is not latin1") from None


def _empty_bytes(reader: _Reader, args: tuple) -> bytes:
    if args != ():
        raise PickleRefused("bytes() is only allowed without arguments")
    return b""


_Global = Callable[["_Reader", tuple], Any]
GLOBALS: dict[tuple[str, str], _Global | _NDArrayClass] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "dtype"): _dtype,
    ("numpy", "ndarray"): _NDARRAY,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
}
_GLOBAL_FUNCS = {f for f in GLOBALS.values() if f is not _NDARRAY}


def _build_dtype(target: _PendingDType, state: Any) -> None:
    # numpy.dtype.__reduce__ state: (3, byteorder, None, None, None, elsize, alignment, flags)
    # (version 4 adds metadata). Structured, sub-array and object dtypes are refused.
    if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
        raise PickleRefused("dtype state must be a version 3 or 4 tuple")
    order = _text(state[1], "dtype byte order")
    if order not in ("<", ">", "|", "=") or any(v is not None for v in state[2:5]):
        raise PickleRefused("only plain integer dtypes are allowed (no fields or sub-arrays)")
    if not all(type(v) is int for v in state[5:8]) or (len(state) == 9 and state[8] is not None):
        raise PickleRefused("dtype state has unexpected sizes, flags or metadata")
    target.dtype = np.dtype(order + target.typestr if order in "<>" else target.typestr)


def _build_array(target: PickledArray, state: Any) -> None:
    # ndarray.__reduce__ state: (1, shape, dtype, is_fortran, raw) or the old 4-tuple.
    if not isinstance(state, tuple) or len(state) not in (4, 5) or (len(state) == 5 and state[0] != 1):
        raise PickleRefused("array state must be (1, shape, dtype, is_fortran, data)")
    shape, dtype, fortran, raw = state[-4:]
    if type(fortran) not in (bool, int) or fortran not in (0, 1):
        raise PickleRefused("array is_fortran flag must be a boolean")
    target.array = _make_array(raw, _finished_dtype(dtype), _shape(shape), bool(fortran))


_KEY_TYPES = (str, bytes, int, float, bool, type(None))


class _Reader:
    """One pass over ``buf``; call :meth:`load` once."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.mv = memoryview(buf).toreadonly()
        self.pos = 0
        self.encoded = 0
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}

    # -- reading the byte stream --

    def take(self, n: int) -> bytes:
        if n < 0 or n > len(self.buf) - self.pos:
            raise PickleRefused(f"a length of {n} bytes at offset {self.pos} runs past the end of the "
                                f"file ({len(self.buf)} bytes)")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def view(self, n: int) -> memoryview:
        start = self.pos
        if n < 0 or n > len(self.buf) - start:
            raise PickleRefused(f"a length of {n} bytes at offset {start} runs past the end of the "
                                f"file ({len(self.buf)} bytes)")
        self.pos = start + n
        return self.mv[start:start + n]

    def unpack(self, fmt: str) -> Any:
        return self.unpack_struct(_STRUCTS.get(fmt) or struct.Struct(fmt))

    def unpack_struct(self, st: struct.Struct) -> Any:
        pos = self.pos
        if pos + st.size > len(self.buf):
            raise PickleRefused(f"file ends inside an opcode argument at offset {pos} (truncated?)")
        self.pos = pos + st.size
        return st.unpack_from(self.buf, pos)[0]

    def line(self, limit: int | None = 256) -> bytes:
        end = self.buf.find(b"\n", self.pos, None if limit is None else self.pos + limit + 1)
        if end < 0:
            raise PickleRefused(f"unterminated text argument at offset {self.pos}")
        out = self.buf[self.pos:end]
        self.pos = end + 1
        return out

    # -- the stack --

    def pop(self) -> Any:
        if not self.stack:
            raise PickleRefused(f"stack underflow at offset {self.pos}")
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise PickleRefused(f"MARK missing at offset {self.pos}")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def top(self, kind: type, what: str) -> Any:
        if not self.stack or not isinstance(self.stack[-1], kind):
            raise PickleRefused(f"{what} needs a {kind.__name__} on the stack at offset {self.pos}")
        return self.stack[-1]

    def push_int(self, value: int) -> None:
        if not -MAX_INT <= value < MAX_INT:
            raise PickleRefused("integer does not fit in 64 bits")
        self.stack.append(value)

    def memo_put(self, index: int) -> None:
        if not 0 <= index <= len(self.buf):
            raise PickleRefused(f"memo index {index} is beyond the file size")
        if not self.stack:
            raise PickleRefused("PUT on an empty stack")
        self.memo[index] = self.stack[-1]

    def memo_get(self, index: int) -> None:
        if index not in self.memo:
            raise PickleRefused(f"memo index {index} was never stored")
        self.stack.append(self.memo[index])

    def setitems(self, target: dict, items: list[Any]) -> None:
        if len(items) % 2:
            raise PickleRefused("SETITEMS with an odd number of items")
        for key, value in zip(items[::2], items[1::2]):
            if not isinstance(key, _KEY_TYPES):
                raise PickleRefused(f"dict key of type {type(key).__name__} is not allowed")
            target[key] = value

    def load(self) -> Any:
        ops = 0
        dispatch = _DISPATCH
        buf = self.buf
        while True:
            if self.pos >= len(buf):
                raise PickleRefused("file ends before the pickle STOP opcode (truncated?)")
            ops += 1
            if ops > MAX_OPS:
                raise PickleRefused(f"more than {MAX_OPS} pickle opcodes")
            code = buf[self.pos]
            self.pos += 1
            if code == 0x2E:  # STOP
                break
            handler = dispatch.get(code)
            if handler is None:
                raise PickleRefused(f"unsupported pickle opcode {bytes([code])!r} at offset {self.pos - 1}")
            handler(self)
        if self.pos != len(buf):
            raise PickleRefused(f"{len(buf) - self.pos} bytes of trailing data after the pickle")
        if len(self.stack) != 1 or self.metastack:
            raise PickleRefused("malformed pickle: the stack does not end with one object")
        return self.stack[0]


# -- opcode handlers ------------------------------------------------------------------------


def _op_proto(r: _Reader) -> None:
    version = r.take(1)[0]
    if version > 5:
        raise PickleRefused(f"unsupported pickle protocol {version}")


def _op_frame(r: _Reader) -> None:
    size = r.unpack("<Q")
    if size > len(r.buf) - r.pos:
        raise PickleRefused(f"frame of {size} bytes runs past the end of the file")


def _op_int(r: _Reader) -> None:
    text = r.line()
    if text == b"00":
        r.stack.append(False)
    elif text == b"01":
        r.stack.append(True)
    else:
        r.push_int(int(text))


def _op_long(r: _Reader) -> None:
    text = r.line()
    r.push_int(int(text[:-1] if text.endswith(b"L") else text))


def _op_long_n(fmt: str) -> Callable[[_Reader], None]:
    def op(r: _Reader) -> None:
        n = r.unpack(fmt)
        if n > 8:
            raise PickleRefused("integer does not fit in 64 bits")
        r.push_int(int.from_bytes(r.take(n), "little", signed=True))
    return op


_STRUCTS = {fmt: struct.Struct(fmt) for fmt in ("<B", "<H", "<i", "<I", "<Q", ">d")}


def _op_struct(fmt: str) -> Callable[[_Reader], None]:
    st = _STRUCTS[fmt]

    def op(r: _Reader) -> None:
        r.stack.append(r.unpack_struct(st))
    return op


def _op_float(r: _Reader) -> None:
    r.stack.append(float(r.line()))


def _op_string(r: _Reader) -> None:  # protocol 0 Python 2 str: a quoted repr, kept as bytes
    text = r.line(limit=None)
    if len(text) < 2 or text[0] != text[-1] or text[:1] not in (b"'", b'"'):
        raise PickleRefused("STRING argument is not quoted")
    r.stack.append(codecs.escape_decode(text[1:-1])[0])


def _op_sized_bytes(fmt: str) -> Callable[[_Reader], None]:
    # Large payloads (array data) come back as read-only memoryviews of the file: no copy.
    st = _STRUCTS[fmt]

    def op(r: _Reader) -> None:
        n = r.unpack_struct(st)
        r.stack.append(r.take(n) if n < _VIEW_FROM else r.view(n))
    return op


def _op_unicode(r: _Reader) -> None:
    r.stack.append(str(r.line(limit=None), "raw-unicode-escape"))


def _op_sized_unicode(fmt: str) -> Callable[[_Reader], None]:
    st = _STRUCTS[fmt]

    def op(r: _Reader) -> None:
        r.stack.append(str(r.take(r.unpack_struct(st)), "utf-8", "surrogatepass"))
    return op


def _op_push(value: Any) -> Callable[[_Reader], None]:
    def op(r: _Reader) -> None:
        r.stack.append(value)
    return op


def _op_empty(kind: type) -> Callable[[_Reader], None]:
    def op(r: _Reader) -> None:
        r.stack.append(kind())
    return op


def _op_mark(r: _Reader) -> None:
    r.metastack.append(r.stack)
    r.stack = []


def _op_pop(r: _Reader) -> None:
    if r.stack:
        r.stack.pop()
    else:
        r.pop_mark()


def _op_pop_mark(r: _Reader) -> None:
    r.pop_mark()


def _op_dup(r: _Reader) -> None:
    if not r.stack:
        raise PickleRefused("DUP on an empty stack")
    r.stack.append(r.stack[-1])


def _op_tuple(r: _Reader) -> None:
    items = tuple(r.pop_mark())  # before touching r.stack: pop_mark() replaces it
    r.stack.append(items)


def _op_tuple_n(n: int) -> Callable[[_Reader], None]:
    def op(r: _Reader) -> None:
        if len(r.stack) < n:
            raise PickleRefused(f"stack underflow at offset {r.pos}")
        items = tuple(r.stack[len(r.stack) - n:])
        del r.stack[len(r.stack) - n:]
        r.stack.append(items)
    return op


def _op_list(r: _Reader) -> None:
    items = r.pop_mark()
    r.stack.append(items)


def _op_dict(r: _Reader) -> None:
    out: dict = {}
    r.setitems(out, r.pop_mark())
    r.stack.append(out)  # r.stack is the outer stack again here


def _op_append(r: _Reader) -> None:
    value = r.pop()
    r.top(list, "APPEND").append(value)


def _op_appends(r: _Reader) -> None:
    items = r.pop_mark()
    r.top(list, "APPENDS").extend(items)


def _op_setitem(r: _Reader) -> None:
    value = r.pop()
    key = r.pop()
    r.setitems(r.top(dict, "SETITEM"), [key, value])


def _op_setitems(r: _Reader) -> None:
    items = r.pop_mark()
    r.setitems(r.top(dict, "SETITEMS"), items)


def _lookup(module: str, name: str) -> Any:
    found = GLOBALS.get((module, name))
    if found is None:
        raise PickleRefused(f"forbidden global {module[:60]}.{name[:60]}")
    return found


def _op_global(r: _Reader) -> None:
    module = r.line().decode("utf-8")
    name = r.line().decode("utf-8")
    r.stack.append(_lookup(module, name))


def _op_stack_global(r: _Reader) -> None:
    name = r.pop()
    module = r.pop()
    if not isinstance(module, str) or not isinstance(name, str):
        raise PickleRefused("STACK_GLOBAL needs two strings")
    r.stack.append(_lookup(module, name))


def _op_reduce(r: _Reader) -> None:
    args = r.pop()
    func = r.pop()
    if func is _NDARRAY:
        raise PickleRefused("calling numpy.ndarray is not allowed (it accepts arbitrary strides)")
    if not isinstance(func, types.FunctionType) or func not in _GLOBAL_FUNCS:
        raise PickleRefused(f"REDUCE of a {type(func).__name__} is not allowed")
    if not isinstance(args, tuple):
        raise PickleRefused("REDUCE arguments must be a tuple")
    r.stack.append(func(r, args))


def _op_build(r: _Reader) -> None:
    state = r.pop()
    target = r.stack[-1] if r.stack else None
    if isinstance(target, _PendingDType) and target.dtype is None:
        _build_dtype(target, state)
    elif isinstance(target, PickledArray) and target.array is None:
        _build_array(target, state)
    else:
        raise PickleRefused(f"BUILD of a {type(target).__name__} is not allowed")


def _op_put(r: _Reader) -> None:
    r.memo_put(int(r.line()))


def _op_get(r: _Reader) -> None:
    r.memo_get(int(r.line()))


def _op_memo(fmt: str, put: bool) -> Callable[[_Reader], None]:
    st = _STRUCTS[fmt]

    def op(r: _Reader) -> None:
        index = r.unpack_struct(st)
        if put:
            r.memo_put(index)
        else:
            r.memo_get(index)
    return op


def _op_memoize(r: _Reader) -> None:
    if not r.stack:
        raise PickleRefused("MEMOIZE on an empty stack")
    r.memo[len(r.memo)] = r.stack[-1]


_DISPATCH: dict[int, Callable[[_Reader], None]] = {ord(k): v for k, v in {
    b"\x80": _op_proto, b"\x95": _op_frame,
    b"(": _op_mark, b"0": _op_pop, b"1": _op_pop_mark, b"2": _op_dup,
    b"N": _op_push(None), b"\x88": _op_push(True), b"\x89": _op_push(False),
    b"I": _op_int, b"L": _op_long, b"J": _op_struct("<i"), b"K": _op_struct("<B"),
    b"M": _op_struct("<H"), b"\x8a": _op_long_n("<B"), b"\x8b": _op_long_n("<I"),
    b"F": _op_float, b"G": _op_struct(">d"),
    b"S": _op_string, b"T": _op_sized_bytes("<i"), b"U": _op_sized_bytes("<B"),
    b"B": _op_sized_bytes("<I"), b"C": _op_sized_bytes("<B"), b"\x8e": _op_sized_bytes("<Q"),
    b"\x96": _op_sized_bytes("<Q"),
    b"V": _op_unicode, b"X": _op_sized_unicode("<I"), b"\x8c": _op_sized_unicode("<B"),
    b"\x8d": _op_sized_unicode("<Q"),
    b")": _op_empty(tuple), b"t": _op_tuple, b"\x85": _op_tuple_n(1), b"\x86": _op_tuple_n(2),
    b"\x87": _op_tuple_n(3),
    b"]": _op_empty(list), b"l": _op_list, b"a": _op_append, b"e": _op_appends,
    b"}": _op_empty(dict), b"d": _op_dict, b"s": _op_setitem, b"u": _op_setitems,
    b"c": _op_global, b"\x93": _op_stack_global, b"R": _op_reduce, b"b": _op_build,
    b"p": _op_put, b"q": _op_memo("<B", True), b"r": _op_memo("<I", True), b"\x94": _op_memoize,
    b"g": _op_get, b"h": _op_memo("<B", False), b"j": _op_memo("<I", False),
}.items()}


def load(buf: bytes) -> Any:
    """Rebuild the object pickled in ``buf``; numpy arrays come back as :class:`PickledArray`.

    Raises :class:`PickleRefused` (one line) for anything outside the supported subset, for
    every inconsistent size, and for malformed or truncated input.
    """
    try:
        return _Reader(bytes(buf)).load()
    except PickleRefused:
        raise
    except (ValueError, UnicodeError, struct.error, OverflowError) as exc:
        # int()/float() on a bad text argument, invalid UTF-8, bad escapes
        msg = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise PickleRefused(f"malformed pickle argument ({type(exc).__name__}: {msg})") from None
