# A binary min-heap of (time, job slot), ties by slot: the replay feed's
# completions and the state's held jobs waiting for a begin time. Included by
# _core.pyx.


cdef int heap_push(TimeHeap* H, int64_t t, int32_t j) noexcept nogil:
    """Add (t, j). 0, or -1 when out of memory."""
    cdef int i, parent, cap = H.cap
    if _reserve(<void**>&H.t, &cap, H.n + 1, sizeof(int64_t)) != 0:
        return -1
    cap = H.cap
    if _reserve(<void**>&H.j, &cap, H.n + 1, sizeof(int32_t)) != 0:
        return -1
    H.cap = cap
    i = H.n
    H.n += 1
    while i > 0:
        parent = (i - 1) >> 1
        if H.t[parent] < t or (H.t[parent] == t and H.j[parent] < j):
            break
        H.t[i] = H.t[parent]
        H.j[i] = H.j[parent]
        i = parent
    H.t[i] = t
    H.j[i] = j
    return 0


cdef int32_t heap_pop(TimeHeap* H) noexcept nogil:
    """Remove and return the slot of the earliest entry (the heap is not empty)."""
    cdef int32_t top = H.j[0]
    cdef int64_t t
    cdef int32_t j
    cdef int i = 0, c
    H.n -= 1
    if H.n == 0:
        return top
    t = H.t[H.n]
    j = H.j[H.n]
    while True:
        c = 2 * i + 1
        if c >= H.n:
            break
        if c + 1 < H.n and (H.t[c + 1] < H.t[c] or (H.t[c + 1] == H.t[c] and H.j[c + 1] < H.j[c])):
            c += 1
        if H.t[c] > t or (H.t[c] == t and H.j[c] > j):
            break
        H.t[i] = H.t[c]
        H.j[i] = H.j[c]
        i = c
    H.t[i] = t
    H.j[i] = j
    return top


cdef inline int64_t heap_top_time(TimeHeap* H) noexcept nogil:
    return H.t[0] if H.n > 0 else NEVER


cdef void heap_release(TimeHeap* H) noexcept nogil:
    free(H.t)
    free(H.j)
    H.t = NULL
    H.j = NULL
    H.n = 0
    H.cap = 0
