# Queue and running-set order. Included by _core.pyx.
#
# The queue is ordered by (key, submit_s, job_id), ties ended by the slot
# index (_qcmp, _qsort_cmp, _qless); the running set by (end_req_s, slot)
# (_run_cmp). A re-sort of the queue is a stable merge sort (_sort_entries),
# near-linear when the order barely changed; qsort with _qsort_cmp is the
# fallback when there is no memory for its buffer.


cdef inline int _qcmp(const QEntry* a, const QEntry* b) noexcept nogil:
    """Queue order: (key, submit_s, job_id); ties end on the job's slot index."""
    if a.key != b.key:
        return -1 if a.key < b.key else 1
    if a.submit_s != b.submit_s:
        return -1 if a.submit_s < b.submit_s else 1
    if a.job_id != b.job_id:
        return -1 if a.job_id < b.job_id else 1
    return 0


cdef int _qsort_cmp(const void* a, const void* b) noexcept nogil:
    cdef int c = _qcmp(<const QEntry*>a, <const QEntry*>b)
    if c != 0:
        return c
    return (<const QEntry*>a).job_idx - (<const QEntry*>b).job_idx


cdef int _run_cmp(const void* a, const void* b) noexcept nogil:
    """Running-set order: (end_req_s, job_idx)."""
    cdef const RunEntry* x = <const RunEntry*>a
    cdef const RunEntry* y = <const RunEntry*>b
    if x.end_req_s != y.end_req_s:
        return -1 if x.end_req_s < y.end_req_s else 1
    return x.job_idx - y.job_idx


cdef inline int _qless(const QEntry* a, const QEntry* b) noexcept nogil:
    cdef int c = _qcmp(a, b)
    if c != 0:
        return c < 0
    return a.job_idx < b.job_idx


cdef void _merge_sort(QEntry* a, QEntry* tmp, int n) noexcept nogil:
    """Sort by queue order: insertion sort below 24 entries, else halves merged;
    an already ordered pair of halves costs one comparison (re-sorts of a queue
    whose order barely changed are near-linear)."""
    cdef int i, k, h, l, r
    cdef QEntry x
    if n < 24:
        for i in range(1, n):
            x = a[i]
            k = i - 1
            while k >= 0 and _qless(&x, &a[k]):
                a[k + 1] = a[k]
                k -= 1
            a[k + 1] = x
        return
    h = n >> 1
    _merge_sort(a, tmp, h)
    _merge_sort(&a[h], tmp, n - h)
    if not _qless(&a[h], &a[h - 1]):
        return
    memcpy(tmp, a, h * sizeof(QEntry))
    l = 0
    r = h
    k = 0
    while l < h and r < n:
        if _qless(&a[r], &tmp[l]):
            a[k] = a[r]
            r += 1
        else:
            a[k] = tmp[l]
            l += 1
        k += 1
    while l < h:
        a[k] = tmp[l]
        l += 1
        k += 1


cdef int _sort_entries(QEntry* a, int n) noexcept nogil:
    """Sort queue entries (stable merge sort with a half-size buffer). 0, or -1."""
    cdef QEntry* tmp = <QEntry*>malloc(max(n // 2 + 1, 1) * sizeof(QEntry))
    if tmp == NULL:
        return -1
    _merge_sort(a, tmp, n)
    free(tmp)
    return 0
