# Availability profile: free resources over future time, for conservative
# backfilling and start estimates. Included by _core.pyx.
#
# A profile is a sequence of segments (t_k, free_k): from time t_k until the
# next breakpoint, free_k of each resource is available; the last segment
# lasts forever. The segments are kept in blocks of up to PROFILE_BLOCK,
# ordered in time by ``order``; each block knows the min and max of its
# stored free amounts and carries a lazy ``add`` applied to all of them, so
# that a search skips whole blocks and a long reservation updates whole
# blocks at once. A search or an update costs O(blocks + PROFILE_BLOCK)
# instead of O(segments): a pass over Q queued jobs is no longer O(Q^2).
#
# Invariants: blocks are non-empty; times strictly increase along the order;
# effective free of segment i of block b = b.f[i*N_RES + r] + b.add[r];
# b.lo is the min of the *stored* free over the block's segments and b.hi an
# upper bound of their max (exact after a split, never below the max).


cdef inline ProfileBlock* _blk(Profile* P, int pos) noexcept nogil:
    return &P.blocks[P.order[pos]]


cdef inline int _seg_ge(ProfileBlock* b, int i, const int64_t* need) noexcept nogil:
    cdef int r
    for r in range(N_RES):
        if need[r] > 0 and b.f[i * N_RES + r] + b.add[r] < need[r]:
            return 0
    return 1


cdef inline int _cores_only(const int64_t* need) noexcept nogil:
    """Only cores are asked for: the other resources' checks always pass (free >= 0)."""
    return need[1] == 0 and need[2] == 0 and need[3] == 0


cdef inline int _seg_ge_any(ProfileBlock* b, int i, const int64_t* need, int one) noexcept nogil:
    if one:
        return b.f[i * N_RES] + b.add[0] >= need[0]
    return _seg_ge(b, i, need)


cdef inline int _blk_may_fit(ProfileBlock* b, const int64_t* need) noexcept nogil:
    """Some segment of the block might hold ``need`` (exact for one resource)."""
    cdef int r
    for r in range(N_RES):
        if need[r] > 0 and b.hi[r] + b.add[r] < need[r]:
            return 0
    return 1


cdef inline int _blk_all_fit(ProfileBlock* b, const int64_t* need) noexcept nogil:
    """Every segment of the block holds ``need``."""
    cdef int r
    for r in range(N_RES):
        if need[r] > 0 and b.lo[r] + b.add[r] < need[r]:
            return 0
    return 1


cdef void _blk_recalc(ProfileBlock* b) noexcept nogil:
    cdef int i, r
    cdef int64_t v
    for r in range(N_RES):
        b.lo[r] = b.f[r]
        b.hi[r] = b.f[r]
    for i in range(1, b.n):
        for r in range(N_RES):
            v = b.f[i * N_RES + r]
            if v < b.lo[r]:
                b.lo[r] = v
            elif v > b.hi[r]:
                b.hi[r] = v


cdef void prof_clear(Profile* P) noexcept nogil:
    P.n_blocks = 0


cdef void prof_release(Profile* P) noexcept nogil:
    free(P.blocks)
    free(P.order)
    P.blocks = NULL
    P.order = NULL
    P.n_blocks = 0
    P.cap_blocks = 0
    P.cap_order = 0


cdef int _prof_new_block(Profile* P, int pos) noexcept nogil:
    """An empty block at order position ``pos``; its id, or -1 (no memory).

    Invalidates ProfileBlock pointers (the pool may move)."""
    cdef int bid, r
    if _reserve(<void**>&P.blocks, &P.cap_blocks, P.n_blocks + 1, sizeof(ProfileBlock)) != 0:
        return -1
    if _reserve(<void**>&P.order, &P.cap_order, P.n_blocks + 1, sizeof(int32_t)) != 0:
        return -1
    bid = P.n_blocks
    if pos < P.n_blocks:
        memmove(&P.order[pos + 1], &P.order[pos], (P.n_blocks - pos) * sizeof(int32_t))
    P.order[pos] = bid
    P.n_blocks += 1
    P.blocks[bid].n = 0
    for r in range(N_RES):
        P.blocks[bid].add[r] = 0
        P.blocks[bid].lo[r] = 0
        P.blocks[bid].hi[r] = 0
    return bid


cdef int prof_append(Profile* P, int64_t t, const int64_t* free_) noexcept nogil:
    """Add a segment after the last one (t must be later). 0 or -1."""
    cdef ProfileBlock* b
    cdef int i, r
    cdef int64_t v
    if P.n_blocks == 0 or _blk(P, P.n_blocks - 1).n == PROFILE_BLOCK:
        if _prof_new_block(P, P.n_blocks) < 0:
            return -1
    b = _blk(P, P.n_blocks - 1)
    i = b.n
    b.t[i] = t
    for r in range(N_RES):
        v = free_[r] - b.add[r]
        b.f[i * N_RES + r] = v
        if i == 0 or v < b.lo[r]:
            b.lo[r] = v
        if i == 0 or v > b.hi[r]:
            b.hi[r] = v
    b.n += 1
    return 0


cdef int prof_locate(Profile* P, int64_t t, int* pos, int* idx) noexcept nogil:
    """The last segment starting at or before ``t`` (t >= the first time).

    Returns 1 when that segment starts exactly at ``t``."""
    cdef int lo = 0, hi = P.n_blocks - 1, mid, a, c
    cdef ProfileBlock* b
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if _blk(P, mid).t[0] <= t:
            lo = mid
        else:
            hi = mid - 1
    b = _blk(P, lo)
    a = 0
    c = b.n - 1
    while a < c:
        mid = (a + c + 1) >> 1
        if b.t[mid] <= t:
            a = mid
        else:
            c = mid - 1
    pos[0] = lo
    idx[0] = a
    return 1 if b.t[a] == t else 0


cdef int prof_split(Profile* P, int64_t t) noexcept nogil:
    """Make ``t`` a breakpoint (the new segment copies the one it splits). 0 or -1."""
    cdef int pos, i, half, nid, r
    cdef ProfileBlock* b
    cdef ProfileBlock* nb
    if prof_locate(P, t, &pos, &i):
        return 0
    if _blk(P, pos).n == PROFILE_BLOCK:
        nid = _prof_new_block(P, pos + 1)
        if nid < 0:
            return -1
        b = _blk(P, pos)
        nb = &P.blocks[nid]
        half = PROFILE_BLOCK // 2
        nb.n = PROFILE_BLOCK - half
        memcpy(nb.t, &b.t[half], nb.n * sizeof(int64_t))
        memcpy(nb.f, &b.f[half * N_RES], nb.n * N_RES * sizeof(int64_t))
        for r in range(N_RES):
            nb.add[r] = b.add[r]
        b.n = half
        _blk_recalc(b)
        _blk_recalc(nb)
        if i >= half:
            pos += 1
            i -= half
    b = _blk(P, pos)
    if i + 1 < b.n:
        memmove(&b.t[i + 2], &b.t[i + 1], (b.n - i - 1) * sizeof(int64_t))
        memmove(&b.f[(i + 2) * N_RES], &b.f[(i + 1) * N_RES], (b.n - i - 1) * N_RES * sizeof(int64_t))
    b.t[i + 1] = t
    for r in range(N_RES):
        b.f[(i + 1) * N_RES + r] = b.f[i * N_RES + r]
    b.n += 1
    return 0


cdef void _blk_sub(ProfileBlock* b, int i0, int i1, const int64_t* need) noexcept nogil:
    """Subtract over segments [i0, i1) of one block.

    Free amounts only ever decrease once a profile is built, so ``lo`` is kept
    exact by a min and ``hi`` stays a valid upper bound without a rescan (it
    only serves to skip blocks that cannot fit)."""
    cdef int i, r
    cdef int64_t v
    for r in range(N_RES):
        if need[r] == 0:
            continue
        for i in range(i0, i1):
            v = b.f[i * N_RES + r] - need[r]
            b.f[i * N_RES + r] = v
            if v < b.lo[r]:
                b.lo[r] = v


cdef int prof_take(Profile* P, int64_t s, int64_t e, const int64_t* need) noexcept nogil:
    """Subtract ``need`` over [s, e) (nothing when e <= s: a 0 s job). 0 or -1."""
    cdef int ps, i_s, pe, i_e, p, r
    cdef ProfileBlock* b
    if e <= s:
        return 0
    if prof_split(P, s) != 0 or prof_split(P, e) != 0:
        return -1
    prof_locate(P, s, &ps, &i_s)
    prof_locate(P, e, &pe, &i_e)
    if ps == pe:
        _blk_sub(_blk(P, ps), i_s, i_e, need)
        return 0
    b = _blk(P, ps)
    _blk_sub(b, i_s, b.n, need)
    for p in range(ps + 1, pe):
        b = _blk(P, p)
        for r in range(N_RES):
            b.add[r] -= need[r]
    if i_e > 0:
        _blk_sub(_blk(P, pe), 0, i_e, need)
    return 0


cdef int64_t prof_earliest(Profile* P, const int64_t* need, int64_t wall, int64_t now) noexcept nogil:
    """Earliest t >= now such that ``need`` is free over [t, t + wall); NEVER if none.

    A start is always a breakpoint (or now): candidates are tried in time
    order; when the window of a candidate meets a segment short of ``need``,
    no start before that segment's end can work, so the search goes on after it.
    """
    cdef int p = 0, i = 0, q, j, failed
    cdef int one = _cores_only(need)
    cdef ProfileBlock* b = NULL
    cdef ProfileBlock* c
    cdef int64_t s, e
    while True:
        # A: the first segment at or after (p, i) that holds need
        while p < P.n_blocks:
            b = _blk(P, p)
            if i < b.n and _blk_may_fit(b, need):
                while i < b.n and not _seg_ge_any(b, i, need, one):
                    i += 1
                if i < b.n:
                    break
            p += 1
            i = 0
        if p >= P.n_blocks:
            return NEVER
        s = b.t[i] if b.t[i] > now else now
        e = s + wall
        # B: does every segment up to e hold need too?
        q = p
        j = i + 1
        failed = 0
        while q < P.n_blocks:
            c = _blk(P, q)
            if j >= c.n:
                q += 1
                j = 0
                continue
            if c.t[j] >= e:
                break
            if j == 0 and _blk_all_fit(c, need):
                q += 1
                continue
            while j < c.n and c.t[j] < e:
                if not _seg_ge_any(c, j, need, one):
                    failed = 1
                    break
                j += 1
            if failed or j < c.n:
                break
            q += 1
            j = 0
        if not failed:
            return s
        p = q
        i = j + 1


cdef inline int64_t prof_free_now_cores(Profile* P) noexcept nogil:
    """Cores free in the first segment (from the pass's now)."""
    return _blk(P, 0).f[RES_CORES] + _blk(P, 0).add[RES_CORES]


cdef int64_t prof_second_time(Profile* P) noexcept nogil:
    """Start of the second segment (NEVER if there is one segment)."""
    if P.n_blocks == 0:
        return NEVER
    if _blk(P, 0).n > 1:
        return _blk(P, 0).t[1]
    if P.n_blocks > 1:
        return _blk(P, 1).t[0]
    return NEVER


cdef void prof_set_first_time(Profile* P, int64_t t) noexcept nogil:
    if P.n_blocks > 0:
        _blk(P, 0).t[0] = t


cdef class AvailabilityProfile:
    """A standalone profile, so its blocked structure is tested on its own.

    The kernel uses the C functions above directly; this wrapper exists for
    the tests (and for anyone who wants a profile's answers in Python).
    """

    cdef Profile P

    def __cinit__(self, int64_t now, const int64_t[::1] free_now):
        cdef int64_t cur[4]
        cdef int r
        if free_now.shape[0] != N_RES:
            raise ValueError(f"free_now needs {N_RES} values")
        for r in range(N_RES):
            cur[r] = free_now[r]
        if prof_append(&self.P, now, cur) != 0:
            raise MemoryError()

    def __dealloc__(self):
        prof_release(&self.P)

    def release_at(self, int64_t t, const int64_t[::1] amount):
        """Add a later breakpoint where ``amount`` more becomes free (build order)."""
        cdef int64_t cur[4]
        cdef int r, pos, idx
        prof_locate(&self.P, t, &pos, &idx)
        for r in range(N_RES):
            cur[r] = _blk(&self.P, pos).f[idx * N_RES + r] + _blk(&self.P, pos).add[r] + amount[r]
        if _blk(&self.P, pos).t[idx] >= t:
            raise ValueError("release_at needs increasing times")
        if prof_append(&self.P, t, cur) != 0:
            raise MemoryError()

    def earliest(self, const int64_t[::1] need, int64_t wall, int64_t now):
        cdef int64_t s = prof_earliest(&self.P, &need[0], wall, now)
        return -1 if s == NEVER else s

    def take(self, int64_t s, int64_t e, const int64_t[::1] need):
        if prof_take(&self.P, s, e, &need[0]) != 0:
            raise MemoryError()

    def segments(self):
        """(times, free) arrays of every segment, in time order."""
        cdef int p, i, r, k = 0, n = 0
        cdef ProfileBlock* b
        for p in range(self.P.n_blocks):
            n += _blk(&self.P, p).n
        times = np.empty(n, dtype=np.int64)
        free_ = np.empty((n, N_RES), dtype=np.int64)
        cdef int64_t[::1] vt = times
        cdef int64_t[:, ::1] vf = free_
        for p in range(self.P.n_blocks):
            b = _blk(&self.P, p)
            for i in range(b.n):
                vt[k] = b.t[i]
                for r in range(N_RES):
                    vf[k, r] = b.f[i * N_RES + r] + b.add[r]
                k += 1
        return times, free_

    @property
    def n_blocks(self):
        return self.P.n_blocks
