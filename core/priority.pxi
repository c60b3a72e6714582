# Multifactor priority and fairshare (as Slurm's priority/multifactor).
# Included by _core.pyx; functions of the state, called by its passes.
#
# priority = w_age * min(age / max_age, 1)        age: time since eligible
#          + w_size * size                         cores / all cores, or 1 - that (favor small)
#          + w_fs * fairshare                      of the job's user, in [0, 1]
#          + w_qos * qos                           the QoS's priority, normalized to [0, 1]
#          - nice                                  per user
#
# Fairshare usage is in core-seconds, decayed with a half-life. It is brought
# up to date at each recomputation (every ``prio_interval_s``): decay what was
# there, then add what ran since the last one. A job submitted between two
# recomputations gets its priority from the last factors and age 0.

cdef enum:
    F_AGE = 0
    F_SIZE = 1
    F_FAIRSHARE = 2
    F_QOS = 3
    F_NICE = 4
    N_FACTORS = 5

FACTOR_NAMES = ("age", "size", "fairshare", "qos", "nice")


cdef double _mf_priority(ClusterState st, int j, int64_t now, double* f) noexcept nogil:
    """The priority of job ``j`` at ``now``; its normalized factors into ``f``."""
    cdef JobSpec* s = &st.jobs[j]
    cdef int64_t since = st.elig_s[j] if st.elig_s[j] >= 0 else s.submit_s
    cdef double age = <double>(now - since) if now > since else 0.0
    cdef double size
    f[F_AGE] = age / <double>st.max_age_s if age < st.max_age_s else 1.0
    size = <double>st.need[j * N_RES + RES_CORES] / <double>(st.all_cores if st.all_cores > 0 else 1)
    f[F_SIZE] = 1.0 - size if st.favor_small else size
    f[F_FAIRSHARE] = st.user_fs[s.user_idx] if 0 <= s.user_idx < st.n_ent[LVL_USER] else 0.0
    f[F_QOS] = st.qos_prio[s.qos_idx] if 0 <= s.qos_idx < st.n_ent[LVL_QOS] else 0.0
    f[F_NICE] = st.user_nice[s.user_idx] if 0 <= s.user_idx < st.n_ent[LVL_USER] else 0.0
    return (st.w_age * f[F_AGE] + st.w_size * f[F_SIZE] + st.w_fs * f[F_FAIRSHARE]
            + st.w_qos * f[F_QOS] - f[F_NICE])


cdef void _mf_accrue(ClusterState st, int64_t now) noexcept nogil:
    """Decay the usage to ``now`` and add what ran since the last update."""
    cdef int u, i, j
    cdef double decay = 1.0, cores
    cdef int64_t since
    if now <= st.usage_t:
        return
    if st.fs_half_life_s > 0:
        decay = exp2(-<double>(now - st.usage_t) / st.fs_half_life_s)
    for u in range(st.n_ent[LVL_USER]):
        st.user_usage[u] = st.user_usage[u] * decay + st.user_acc[u]
        st.user_acc[u] = 0.0
    if st._run_sorted() != 0:
        return
    for i in range(st.n_run):
        j = st.run[i].job_idx
        u = st.jobs[j].user_idx
        if 0 <= u < st.n_ent[LVL_USER]:
            since = st.start_s[j] if st.start_s[j] > st.usage_t else st.usage_t
            cores = <double>st.need[j * N_RES + RES_CORES]
            st.user_usage[u] += cores * <double>(now - since)
    st.usage_t = now


cdef void _mf_usage_at_end(ClusterState st, int j, int64_t now) noexcept nogil:
    """A running job ends: its core-seconds since the last update wait in user_acc."""
    cdef int u = st.jobs[j].user_idx
    cdef int64_t since
    if 0 <= u < st.n_ent[LVL_USER] and st.start_s[j] >= 0:
        since = st.start_s[j] if st.start_s[j] > st.usage_t else st.usage_t
        if now > since:
            st.user_acc[u] += <double>st.need[j * N_RES + RES_CORES] * <double>(now - since)


ctypedef struct _FsKey:
    double group_lf
    double user_lf
    int32_t group
    int32_t user


cdef int _fs_key_cmp(const void* a, const void* b) noexcept nogil:
    """Fair-tree walk order: groups by level fairshare (desc), then users (desc)."""
    cdef const _FsKey* x = <const _FsKey*>a
    cdef const _FsKey* y = <const _FsKey*>b
    if x.group_lf != y.group_lf:
        return -1 if x.group_lf > y.group_lf else 1
    if x.group != y.group:
        return -1 if x.group < y.group else 1
    if x.user_lf != y.user_lf:
        return -1 if x.user_lf > y.user_lf else 1
    return x.user - y.user


cdef void _insertion_sort(_FsKey* keys, int n) noexcept nogil:
    cdef int i, k
    cdef _FsKey x
    for i in range(1, n):
        x = keys[i]
        k = i - 1
        while k >= 0 and _fs_key_cmp(&keys[k], &x) > 0:
            keys[k + 1] = keys[k]
            k -= 1
        keys[k + 1] = x


cdef inline double _level_fs(double share_norm, double usage_norm) noexcept nogil:
    """Slurm's level fairshare S/U (no usage ranks above any usage)."""
    if usage_norm <= 0.0:
        return 1e300
    return share_norm / usage_norm


cdef int _mf_fairshare(ClusterState st) noexcept nogil:
    """Each user's fairshare factor from the decayed usage and the shares."""
    cdef int nu = st.n_ent[LVL_USER], ng = st.n_ent[LVL_GROUP] + 1  # + one for "no group"
    cdef int u, g, k, rank
    cdef double total = 0.0, gshares = 0.0, s_user, u_user, u_eff
    cdef double* g_usage
    cdef double* g_share
    cdef double* g_ushares
    cdef _FsKey* keys
    if nu <= 0:
        return 0
    g_usage = <double*>calloc(ng, sizeof(double))
    g_share = <double*>calloc(ng, sizeof(double))
    g_ushares = <double*>calloc(ng, sizeof(double))
    if g_usage == NULL or g_share == NULL or g_ushares == NULL:
        free(g_usage); free(g_share); free(g_ushares)
        return -1
    # groups are indexed g + 1 so that users without a group share one node (index 0)
    for u in range(nu):
        g = st.user_group[u] + 1
        g_usage[g] += st.user_usage[u]
        g_ushares[g] += st.user_share[u]
        total += st.user_usage[u]
    for g in range(ng):
        if g_ushares[g] > 0:   # a group counts once it has a user
            g_share[g] = st.group_share[g - 1] if g > 0 else 1.0
            gshares += g_share[g]
    if st.fs_algo == FS_CLASSIC:
        for u in range(nu):
            g = st.user_group[u] + 1
            s_user = (g_share[g] / gshares) * (st.user_share[u] / g_ushares[g])
            if total <= 0.0:
                st.user_fs[u] = 1.0
                continue
            u_user = st.user_usage[u] / total
            # effective usage: own usage plus the group's beyond it, by the user's share of it
            u_eff = u_user + (g_usage[g] / total - u_user) * (st.user_share[u] / g_ushares[g])
            st.user_fs[u] = exp2(-u_eff / s_user) if s_user > 0 else 0.0
    else:
        # The walk order changes little between recomputations: keep the last
        # one and re-sort it by insertion (near-linear on nearly sorted keys).
        if st.fs_keys_n != nu:
            free(st.fs_keys)
            st.fs_keys = malloc(nu * sizeof(_FsKey))
            if st.fs_keys == NULL:
                st.fs_keys_n = 0
                free(g_usage); free(g_share); free(g_ushares)
                return -1
            st.fs_keys_n = nu
            for u in range(nu):
                (<_FsKey*>st.fs_keys)[u].user = u
        keys = <_FsKey*>st.fs_keys
        for k in range(nu):
            u = keys[k].user
            g = st.user_group[u] + 1
            keys[k].group = g
            keys[k].group_lf = _level_fs(g_share[g] / gshares,
                                         g_usage[g] / total if total > 0 else 0.0)
            keys[k].user_lf = _level_fs(st.user_share[u] / g_ushares[g],
                                        st.user_usage[u] / g_usage[g] if g_usage[g] > 0 else 0.0)
        _insertion_sort(keys, nu)
        # rank from the top; users whose (group, user) level fairshares tie share a rank
        rank = nu
        for k in range(nu):
            if k > 0 and (keys[k].group_lf != keys[k - 1].group_lf
                          or keys[k].user_lf != keys[k - 1].user_lf):
                rank = nu - k
            st.user_fs[keys[k].user] = <double>rank / <double>nu
    free(g_usage); free(g_share); free(g_ushares)
    return 0


cdef int _mf_recompute(ClusterState st, int64_t now) noexcept nogil:
    """Usage, fairshare factors and every pending job's priority; the queue re-sorted."""
    cdef int p, j, ordered = 1
    cdef double f[5]
    _mf_accrue(st, now)
    if _mf_fairshare(st) != 0:
        return -1
    st._compact_queue()
    for p in range(st.q_end):
        j = st.q[p].job_idx
        st.jobs[j].priority = _mf_priority(st, j, now, f)
        st._entry_of(j, &st.q[p])
        if p > 0 and _qsort_cmp(&st.q[p - 1], &st.q[p]) > 0:
            ordered = 0
    if not ordered:
        # the order changed: re-sort, and the next pass looks at every job again
        if _sort_entries(st.q, st.q_end) != 0:
            qsort(st.q, st.q_end, sizeof(QEntry), _qsort_cmp)
        st.need_full_pass = 1
    elif st.head_idx >= 0 and st.job_state[st.head_idx] == JS_PENDING:
        # same order: only the keys moved and the last pass's decisions hold;
        # arrivals are compared with the head by its new key
        st._entry_of(st.head_idx, &st.head_entry)
    st.n_recomputes += 1
    if st.prio_phase_s < 0:
        st.next_prio_s = now + st.prio_interval_s
    elif now < st.prio_phase_s:
        st.next_prio_s = st.prio_phase_s
    else:
        st.next_prio_s = (st.prio_phase_s
                          + ((now - st.prio_phase_s) // st.prio_interval_s + 1) * st.prio_interval_s)
    return 0
