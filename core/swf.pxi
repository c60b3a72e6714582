# The SWF reader's fast path: data lines of whitespace-separated numbers into
# columns, in one pass over the bytes. Included by _core.pyx; the reader
# (htcsim.workload.swf) reaches it through htcsim.kernel.
#
# It vouches only for plain input: every line N tokens, a whole-number field
# a plain integer of at most 18 digits, a decimal field a plain decimal
# number. Anything else (a blank line, a comment, a token that is not such a
# number, a wrong count) gives None and the reader's slower paths decide,
# naming the bad line.

from libc.stdlib cimport strtod
from libc.string cimport memchr


cdef inline bint _swf_blank(char c) noexcept nogil:
    return c == b' ' or c == b'\t' or c == b'\r' or c == b'\v' or c == b'\f'


cdef inline bint _swf_digit(char c) noexcept nogil:
    return b'0' <= c <= b'9'


cdef inline Py_ssize_t _swf_decimal_end(const char* s, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """End of ``[+-]?(\\d+\\.?\\d*|\\.\\d+)([eE][+-]?\\d+)?`` read from ``a``; -1 when
    s[a:b] does not start with one."""
    cdef Py_ssize_t p = a, digits = 0
    if p < b and (s[p] == b'+' or s[p] == b'-'):
        p += 1
    while p < b and _swf_digit(s[p]):
        p += 1
        digits += 1
    if p < b and s[p] == b'.':
        p += 1
        while p < b and _swf_digit(s[p]):
            p += 1
            digits += 1
    if digits == 0:
        return -1
    if p < b and (s[p] == b'e' or s[p] == b'E'):
        p += 1
        if p < b and (s[p] == b'+' or s[p] == b'-'):
            p += 1
        if p >= b or not _swf_digit(s[p]):
            return -1
        while p < b and _swf_digit(s[p]):
            p += 1
    return p


def swf_columns(bytes data, const int8_t[::1] decimal):
    """(whole-number columns int64, decimal columns float64) of ``data``: lines
    of N = len(decimal) numbers, field k decimal when ``decimal[k]``; each
    array has one row per field of its kind, in field order, and one column
    per line. None when the data is not plainly that.

    ``data`` starts with a data line and does not end with a line end.
    """
    cdef Py_ssize_t size = len(data), n_fields = decimal.shape[0]
    cdef const char* s = data
    cdef Py_ssize_t pos, a, end, n_lines = 1, line = 0, f, p, digits, n_dec = 0
    cdef int64_t value
    cdef bint negative, ok = 1
    cdef char* stop
    if size == 0 or s[size - 1] == b'\n' or n_fields == 0:
        return None
    cdef const char* nl = s
    while True:
        nl = <const char*>memchr(nl, b'\n', size - (nl - s))
        if nl == NULL:
            break
        n_lines += 1
        nl += 1
    cdef Py_ssize_t[::1] row = np.empty(n_fields, dtype=np.intp)
    for f in range(n_fields):
        row[f] = n_dec if decimal[f] else f - n_dec
        n_dec += 1 if decimal[f] else 0
    ints = np.empty((n_fields - n_dec, n_lines), dtype=np.int64)
    decs = np.empty((n_dec, n_lines), dtype=np.float64)
    cdef int64_t[:, ::1] iv = ints
    cdef double[:, ::1] dv = decs
    pos = 0
    with nogil:
        while line < n_lines and ok:
            f = 0
            while True:
                while pos < size and _swf_blank(s[pos]):
                    pos += 1
                if pos >= size or s[pos] == b'\n':
                    break
                a = pos
                while pos < size and s[pos] != b'\n' and not _swf_blank(s[pos]):
                    pos += 1
                if f >= n_fields:
                    ok = 0
                    break
                if decimal[f]:
                    end = _swf_decimal_end(s, a, pos)
                    if end != pos:
                        ok = 0
                        break
                    dv[row[f], line] = strtod(s + a, &stop)
                    if stop != s + pos:
                        ok = 0
                        break
                else:
                    p = a
                    negative = s[p] == b'-'
                    if s[p] == b'-' or s[p] == b'+':
                        p += 1
                    digits = pos - p
                    if digits < 1 or digits > 18:
                        ok = 0
                        break
                    value = 0
                    while p < pos:
                        if not _swf_digit(s[p]):
                            ok = 0
                            break
                        value = value * 10 + (s[p] - 48)  # '0'
                        p += 1
                    if not ok:
                        break
                    iv[row[f], line] = -value if negative else value
                f += 1
            if not ok or f != n_fields:
                ok = 0
                break
            line += 1
            pos += 1  # the line end
    if not ok or line != n_lines:
        return None
    return ints, decs
