# Node lifecycle and the autoscaler. Included by _core.pyx.
#
# Every node state change goes through _node_to, which keeps the free totals,
# the per-state counts, the idle clocks and the provisioned-time clocks (cost)
# in step. The autoscaler is one decision per pass (_autoscale): boot nodes for
# pending demand that has waited long enough, power off nodes idle long
# enough, with a cooldown per node type. The simulator completes boots after
# the boot delay (_complete_boots); a live agent reports them as nodes join.


cdef int fifo_push(JobFifo* F, int32_t j, int64_t t) noexcept nogil:
    """Append (j, t). 0, or -1 when out of memory."""
    cdef int cap = F.cap
    if _reserve(<void**>&F.j, &cap, F.n + 1, sizeof(int32_t)) != 0:
        return -1
    cap = F.cap
    if _reserve(<void**>&F.t, &cap, F.n + 1, sizeof(int64_t)) != 0:
        return -1
    F.cap = cap
    F.j[F.n] = j
    F.t[F.n] = t
    F.n += 1
    return 0


cdef void fifo_release(JobFifo* F) noexcept nogil:
    free(F.j)
    free(F.t)
    F.j = NULL
    F.t = NULL
    F.n = F.head = F.cap = 0


cdef inline int _fifo_stale(ClusterState st, JobFifo* F, int k) noexcept nogil:
    """Entry k no longer stands for a pending job (it started, was held, requeued...)."""
    cdef int j = F.j[k]
    return st.job_state[j] != JS_PENDING or st.elig_s[j] != F.t[k]


cdef void _fifo_trim(ClusterState st, JobFifo* F) noexcept nogil:
    """Drop stale entries at the head; compact when the dead prefix dominates."""
    while F.head < F.n and _fifo_stale(st, F, F.head):
        F.head += 1
    if F.head > 1024 and 2 * F.head > F.n:
        memmove(F.j, &F.j[F.head], (F.n - F.head) * sizeof(int32_t))
        memmove(F.t, &F.t[F.head], (F.n - F.head) * sizeof(int64_t))
        F.n -= F.head
        F.head = 0


cdef inline void _mark_idle(ClusterState st, int n, int64_t now) noexcept nogil:
    st.idle_since[n] = now
    if st.as_on and st.as_scaled[st.node_type[n]] and now + st.as_idle_s < st.as_down_next:
        st.as_down_next = now + st.as_idle_s


cdef void _node_to(ClusterState st, int n, int state, int64_t now) noexcept nogil:
    """Move node ``n`` to ``state`` at ``now``: the one place node states change."""
    cdef int r, old = st.node_state[n], t = st.node_type[n]
    cdef int p = st.node_part[n]
    cdef int was_up = old == NODE_UP
    cdef int is_up = state == NODE_UP
    cdef int sign
    if old == state:
        return
    if was_up != is_up:
        sign = 1 if is_up else -1
        for r in range(N_RES):
            st.total_free[r] += sign * st.node_free[n * N_RES + r]
            st.total_cap[r] += sign * st.node_cap[n * N_RES + r]
            if st.n_part > 1:
                st.part_free[p * N_RES + r] += sign * st.node_free[n * N_RES + r]
                st.part_cap[p * N_RES + r] += sign * st.node_cap[n * N_RES + r]
        if st.node_tasks[n] > 0:
            st.n_busy_up += sign
    if old == NODE_OFF:
        st.on_since[n] = now
        st.type_prov[t] += 1
        st.on_rate += st.type_price[t]
    elif state == NODE_OFF:
        st.on_acc_s[n] += now - st.on_since[n]
        st.on_since[n] = -1
        st.type_prov[t] -= 1
        st.on_rate -= st.type_price[t]
    if old == NODE_BOOTING:
        st.type_booting[t] -= 1
        st.ready_s[n] = -1
    elif state == NODE_BOOTING:
        st.type_booting[t] += 1
        st.ready_s[n] = NEVER  # up when told (a live node joins), or at _boot's delay
    st.n_in_state[old] -= 1
    st.n_in_state[state] += 1
    st.node_state[n] = <int8_t>state
    if is_up and st.node_tasks[n] == 0:
        _mark_idle(st, n, now)
    else:
        st.idle_since[n] = -1
    if is_up and n < st.first_free_node:
        st.first_free_node = n
    tree_update(st, n)
    st.need_full_pass = 1


cdef int _boot(ClusterState st, int n, int64_t now) noexcept nogil:
    """Power on OFF node ``n``: BOOTING for the boot delay (UP at once without
    one); with live boots (as_boot_s < 0), BOOTING until the agent sets it UP."""
    if st.as_boot_s < 0:
        _node_to(st, n, NODE_BOOTING, now)  # ready_s = NEVER: no wakeup for it
    elif st.as_boot_s > 0:
        _node_to(st, n, NODE_BOOTING, now)
        st.ready_s[n] = now + st.as_boot_s
        if st.ready_s[n] < st.boot_next or st.n_in_state[NODE_BOOTING] == 1:
            st.boot_next = st.ready_s[n]
    else:
        _node_to(st, n, NODE_UP, now)
    st.n_boots += 1
    if _reserve(<void**>&st.as_booted, &st.cap_as_booted, st.n_as_booted + 1, sizeof(int32_t)) != 0:
        return -1
    st.as_booted[st.n_as_booted] = n
    st.n_as_booted += 1
    return 0


cdef void _drain(ClusterState st, int n, int64_t now) noexcept nogil:
    """Node ``n`` takes no new task; it goes OFF when its last task ends (now if it has none)."""
    if st.node_state[n] == NODE_UP or st.node_state[n] == NODE_BOOTING:
        _node_to(st, n, NODE_DRAINING, now)
    if st.node_state[n] == NODE_DRAINING and st.node_tasks[n] == 0:
        _node_to(st, n, NODE_OFF, now)


cdef int _power_off(ClusterState st, int n, int64_t now) noexcept nogil:
    """Drain idle node ``n`` and let it go (it has no task: it leaves at once)."""
    _drain(st, n, now)
    st.n_shutdowns += 1
    if _reserve(<void**>&st.as_stopped, &st.cap_as_stopped, st.n_as_stopped + 1, sizeof(int32_t)) != 0:
        return -1
    st.as_stopped[st.n_as_stopped] = n
    st.n_as_stopped += 1
    return 0


cdef void _complete_boots(ClusterState st, int64_t now) noexcept nogil:
    """Booting nodes whose boot delay has passed come UP (simulation).
    boot_next (a lower bound of the earliest ready time) spares the node scan."""
    cdef int n
    cdef int64_t nxt = NEVER
    if st.n_in_state[NODE_BOOTING] == 0 or st.boot_next > now:
        return
    for n in range(st.n_nodes):
        if st.node_state[n] == NODE_BOOTING:
            if st.ready_s[n] <= now:
                _node_to(st, n, NODE_UP, now)
            elif st.ready_s[n] < nxt:
                nxt = st.ready_s[n]
    st.boot_next = nxt


cdef int64_t _next_boot(ClusterState st) noexcept nogil:
    """The earliest boot completion after the pass in progress (NEVER: none).
    boot_next can be stale (a booting node failed or was drained): rescan then."""
    cdef int n
    cdef int64_t nxt = NEVER
    if st.n_in_state[NODE_BOOTING] == 0:
        return NEVER
    if st.boot_next > st.cur_now:
        return st.boot_next
    for n in range(st.n_nodes):
        if st.node_state[n] == NODE_BOOTING and st.ready_s[n] < nxt:
            nxt = st.ready_s[n]
    st.boot_next = nxt
    return nxt


cdef inline int64_t _idle_due(ClusterState st, int n, int t) noexcept nogil:
    """When idle node ``n`` of type ``t`` may leave: idle long enough, and its
    type's cooldown past."""
    return max(st.idle_since[n] + st.as_idle_s, st.as_last_s[t] + st.as_cooldown_s)


cdef int64_t _exact_down_next(ClusterState st, int64_t now) noexcept nogil:
    """The earliest time after ``now`` an idle node may leave (its idle time
    and its type's cooldown both past), over types above their min."""
    cdef int t, n
    cdef int64_t due, best = NEVER
    for t in range(st.n_types):
        if not st.as_scaled[t] or st.type_prov[t] <= st.as_min[t]:
            continue
        for n in range(st.type_first[t], st.type_end[t]):
            if st.node_state[n] == NODE_UP and st.node_tasks[n] == 0:
                due = _idle_due(st, n, t)
                if due <= now:
                    due = now + 1
                if due < best:
                    best = due
    return best


cdef int _task_fits(ClusterState st, int t, int j) noexcept nogil:
    """Could a node of type ``t`` hold a task of job ``j`` (same partition)?"""
    cdef int r
    if st.n_part > 1 and st.node_part[st.type_first[t]] != st.jobs[j].part_idx:
        return 0
    for r in range(N_RES):
        if st.jobs[j].per_task[r] > st.type_cap[t * N_RES + r]:
            return 0
    return 1


cdef int _type_for(ClusterState st, int j) noexcept nogil:
    """The first autoscaled node type (cluster order) below its max that a task
    of job ``j`` fits on, in the job's partition; -1 if none."""
    cdef int t
    for t in range(st.n_types):
        if st.as_scaled[t] and st.type_prov[t] < st.as_max[t] and _task_fits(st, t, j):
            return t
    return -1


cdef int64_t _nodes_for(ClusterState st, int t) noexcept nogil:
    """Nodes of type ``t`` that hold the demand gathered for it (per resource, rounded up)."""
    cdef int r
    cdef int64_t c, k, most = 0
    for r in range(N_RES):
        c = st.type_cap[t * N_RES + r]
        if c > 0:
            k = (st.as_demand[t * N_RES + r] + c - 1) // c
            if k > most:
                most = k
    return most


cdef int _add_demand(ClusterState st, int j) noexcept nogil:
    """Count job ``j`` on the first autoscaled type it fits; 1 if that type's
    demand now fills what it may add (no later job changes its decision)."""
    cdef int r, t = _type_for(st, j)
    if t < 0 or st.as_room[t] <= 0 or st.as_full[t]:
        return 0  # (a type cooling down: its demand waits for it)
    for r in range(N_RES):
        st.as_demand[t * N_RES + r] += st.need[j * N_RES + r]
    if _nodes_for(st, t) >= st.as_room[t] + st.type_booting[t]:
        st.as_full[t] = 1
        return 1
    return 0


cdef void _gather_demand_in_queue(ClusterState st, int64_t now, int open_types) noexcept nogil:
    """The demand walk when queued-job caps apply: in queue order, so that only
    the jobs a pass would consider (the first N of each entity) count."""
    cdef int pos, j, held, full = 0
    st._reset_seen()
    for pos in range(st.q_begin, st.q_end):
        j = st.q[pos].job_idx
        if j < 0:
            continue
        held = st._visit_limit(j)
        if st.elig_s[j] + st.as_wait_s > now:
            if st.elig_s[j] + st.as_wait_s < st.as_up_next:
                st.as_up_next = st.elig_s[j] + st.as_wait_s
            continue
        if held or (st.n_resv and st._owner_resv(j) >= 0):
            continue
        full += _add_demand(st, j)
        if full >= open_types:
            return


cdef int _scale_up(ClusterState st, int64_t now) noexcept nogil:
    """Boot nodes for pending demand that waited at least as_wait_s.

    The demand is every pending job eligible for that long, not kept back by a
    limit or waiting for its own advance reservation, counted on the first
    autoscaled type it fits; each type adds the nodes that hold its demand,
    less those already booting, at most as_step and up to its max.
    """
    cdef int t, k, j, r, n, open_types = 0, full = 0
    cdef int64_t want
    cdef JobFifo* F = &st.as_fifo
    for t in range(st.n_types):
        st.as_room[t] = 0
        st.as_full[t] = 0
        if not st.as_scaled[t]:
            continue
        for r in range(N_RES):
            st.as_demand[t * N_RES + r] = 0
        if now < st.as_last_s[t] + st.as_cooldown_s:
            if st.n_pending and st.as_last_s[t] + st.as_cooldown_s < st.as_up_next:
                st.as_up_next = st.as_last_s[t] + st.as_cooldown_s
            continue
        st.as_room[t] = min(st.as_step, st.as_max[t] - st.type_prov[t])
        if st.as_room[t] > 0:
            open_types += 1
    if open_types == 0 or st.n_pending == 0:
        return 0
    if st.queued_limits_on:
        _gather_demand_in_queue(st, now, open_types)
    else:
        _fifo_trim(st, F)
        k = F.head
        while k < F.n and full < open_types:
            if _fifo_stale(st, F, k):
                k += 1
                continue
            if F.t[k] + st.as_wait_s > now:
                if F.t[k] + st.as_wait_s < st.as_up_next:
                    st.as_up_next = F.t[k] + st.as_wait_s
                break
            j = F.j[k]
            k += 1
            if (st.limits_on and st._over_limit(j)) or (st.n_resv and st._owner_resv(j) >= 0):
                continue
            full += _add_demand(st, j)
    for t in range(st.n_types):
        if st.as_room[t] <= 0:
            continue
        want = min(_nodes_for(st, t) - st.type_booting[t], <int64_t>st.as_room[t])
        if want <= 0:
            continue
        n = st.type_first[t]
        while want > 0 and n < st.type_end[t]:
            if st.node_state[n] == NODE_OFF:
                if _boot(st, n, now) != 0:
                    return -1
                want -= 1
            n += 1
        st.as_last_s[t] = now
        st.as_room[t] = -1  # acted: no scale-down of this type in this decision
    return 0


cdef int _type_has_demand(ClusterState st, int t) noexcept nogil:
    """Is a pending job (not kept back by a limit or its own reservation)
    waiting that a node of type ``t`` could serve?"""
    cdef int k, j, pos
    cdef JobFifo* F = &st.as_fifo
    if st.queued_limits_on:
        st._reset_seen()
        for pos in range(st.q_begin, st.q_end):
            j = st.q[pos].job_idx
            if j >= 0 and not st._visit_limit(j) and _serves(st, t, j):
                return 1
        return 0
    _fifo_trim(st, F)
    for k in range(F.head, F.n):
        if _fifo_stale(st, F, k):
            continue
        j = F.j[k]
        if _serves(st, t, j):
            return 1
    return 0


cdef int _serves(ClusterState st, int t, int j) noexcept nogil:
    """Could a node of type ``t`` serve pending job ``j`` (a task fits, same
    partition, not kept back by a running-job limit or waiting for its own
    reservation)?"""
    if not _task_fits(st, t, j):
        return 0
    if (st.limits_on and st._over_limit(j)) or (st.n_resv and st._owner_resv(j) >= 0):
        return 0
    return 1


cdef int _scale_down(ClusterState st, int64_t now) noexcept nogil:
    """Power off nodes idle for at least as_idle_s, highest index first, never
    below a type's min. A type keeps its nodes while it just acted, cools down,
    or has pending jobs it could serve (else a boot delay longer than the idle
    time would boot and power off nodes forever under a job that needs several)."""
    cdef int t, n, acted
    cdef int64_t due, next_t = NEVER
    if st.as_down_next > now and not st.as_down_rescan:
        return 0
    st.as_down_rescan = 0
    for t in range(st.n_types):
        if not st.as_scaled[t]:
            continue
        if st.type_prov[t] > st.as_min[t] and st.n_pending and _type_has_demand(st, t):
            st.as_down_rescan = 1  # look again at the next decision
            continue
        acted = 0
        n = st.type_end[t] - 1
        while n >= st.type_first[t]:
            if st.node_state[n] == NODE_UP and st.node_tasks[n] == 0:
                due = _idle_due(st, n, t)
                if due <= now and st.as_room[t] < 0:
                    due = now + 1  # the type acted in this decision: the next one
                if due <= now and st.type_prov[t] > st.as_min[t]:
                    if _power_off(st, n, now) != 0:
                        return -1
                    acted = 1
                elif due > now and st.type_prov[t] > st.as_min[t] and due < next_t:
                    next_t = due
            n -= 1
        if acted:
            st.as_last_s[t] = now
    st.as_down_next = next_t
    return 0


cdef int _autoscale(ClusterState st, int64_t now) noexcept nogil:
    """One autoscaler decision at ``now`` (after the pass): scale up, then down.
    With an interval, decisions are taken only at passes on or after the next
    multiple of it (as an autoscaler loop that wakes up periodically)."""
    st.n_as_booted = 0
    st.n_as_stopped = 0
    if not st.as_on:
        return 0
    if now < st.as_decide_s:
        st.as_skipped = 1  # the state changed between two decisions: take the next one
        return 0
    st.as_skipped = 0
    if st.as_interval_s > 0:
        st.as_decide_s = (now // st.as_interval_s + 1) * st.as_interval_s
    st.as_up_next = NEVER
    if _scale_up(st, now) != 0:
        return -1
    return _scale_down(st, now)


cdef int64_t _autoscale_wakeup(ClusterState st) noexcept nogil:
    """The earliest future time an autoscaler rule or a boot may change something."""
    cdef int64_t t = _next_boot(st)
    cdef int64_t a = NEVER, k = st.as_interval_s
    if not st.as_on:
        return t
    if st.as_up_next > st.cur_now or (k > 0 and st.as_up_next != NEVER):
        a = st.as_up_next
    if (st.as_down_next > st.cur_now or (k > 0 and st.as_down_next <= st.cur_now
                                         and st.as_decide_s > st.cur_now)) and st.as_down_next < a:
        # a lower bound (nodes that went busy again still count): make it exact
        # rather than wake the replay up for nothing
        st.as_down_next = _exact_down_next(st, st.cur_now)
        if st.as_down_next < a:
            a = st.as_down_next
    if k > 0 and a != NEVER:
        # the next decision the loop takes at or after it
        if a < st.as_decide_s:
            a = st.as_decide_s
        a = ((a + k - 1) // k) * k
    if st.as_skipped and st.as_decide_s > st.cur_now and st.as_decide_s < a:
        a = st.as_decide_s
    return a if a < t else t
