# Compatibility profile: the scheduling loop of RLScheduler's simulator (Zhang et
# al., SC20), to reproduce its published heuristic results. Never the default.
# Included by _core.pyx. See experiments/rlscheduler-table5/PROTOCOL.md.
#
# One window of jobs (in job list order) on `total_nodes` whole nodes:
# * the job of lowest (score, job id) is picked and committed: it waits until
#   it fits, later arrivals cannot replace it; after a start the next pick
#   happens at the same instant;
# * time advances one event at a time: the next arrival when its submit time
#   is <= the first actual end, else the release of the single running job
#   that ends first (running jobs kept as a list re-sorted stably by actual
#   end before each release, as the original does);
# * with an empty queue, exactly one arrival is added before the next pick;
# * backfilling: when the picked job first blocks, its shadow time is the
#   requested end of the running job (list re-sorted stably by requested end)
#   at which the free nodes reach its need; then, before every event until it
#   fits, the queue is scanned in (submit, job id) order and every job that
#   fits now and whose now + requested time is below the shadow starts.


cdef void _stable_sort_running(int32_t* run, int n, const int64_t* key) noexcept nogil:
    """Insertion sort by key[job], stable (the list is nearly sorted between calls)."""
    cdef int i, k
    cdef int32_t j
    for i in range(1, n):
        j = run[i]
        k = i - 1
        while k >= 0 and key[run[k]] > key[j]:
            run[k + 1] = run[k]
            k -= 1
        run[k + 1] = j


def rlscheduler_window(const int64_t[::1] submit, const int64_t[::1] run_s,
                       const int64_t[::1] request_s, const int64_t[::1] nodes_needed,
                       const double[::1] score, const int64_t[::1] job_id,
                       int64_t total_nodes, bint backfill):
    """Start time of every job of one window under the RLScheduler loop (see above)."""
    cdef Py_ssize_t n = submit.shape[0]
    if (run_s.shape[0] != n or request_s.shape[0] != n or nodes_needed.shape[0] != n
            or score.shape[0] != n or job_id.shape[0] != n):
        raise ValueError("one value per job in every array")
    cdef Py_ssize_t i
    for i in range(n):
        if nodes_needed[i] > total_nodes or nodes_needed[i] < 1:
            raise ValueError(f"job {job_id[i]} needs {nodes_needed[i]} of {total_nodes} nodes")
    starts = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return starts
    cdef int64_t[::1] start = starts
    actual = np.zeros(n, dtype=np.int64)
    estimate = np.zeros(n, dtype=np.int64)
    cdef int64_t[::1] act = actual
    cdef int64_t[::1] est = estimate
    queue_arr = np.empty(n, dtype=np.int32)
    running_arr = np.empty(n, dtype=np.int32)
    order_arr = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] queue = queue_arr
    cdef int32_t[::1] running = running_arr
    cdef int32_t[::1] order = order_arr
    cdef int qn = 1, rn = 0, nxt = 1, k, j, q, m, best
    cdef int64_t now = submit[0], free = total_nodes, shadow, avail, release
    queue[0] = 0
    with nogil:
        while True:
            best = 0
            for k in range(1, qn):
                q = queue[k]
                if (score[q] < score[queue[best]]
                        or (score[q] == score[queue[best]] and job_id[q] < job_id[queue[best]])):
                    best = k
            j = queue[best]
            if nodes_needed[j] > free:
                shadow = now
                if backfill:
                    _stable_sort_running(&running[0], rn, &est[0])
                    avail = free
                    for k in range(rn):
                        avail += nodes_needed[running[k]]
                        shadow = est[running[k]]
                        if avail >= nodes_needed[j]:
                            break
                while nodes_needed[j] > free:
                    if backfill:
                        # the queue in (submit, job id) order, then every job that fits and ends before the shadow
                        for k in range(qn):
                            order[k] = queue[k]
                        for k in range(1, qn):
                            q = order[k]
                            m = k - 1
                            while m >= 0 and (submit[order[m]] > submit[q] or (
                                    submit[order[m]] == submit[q] and job_id[order[m]] > job_id[q])):
                                order[m + 1] = order[m]
                                m -= 1
                            order[m + 1] = q
                        for k in range(qn):
                            q = order[k]
                            if now + request_s[q] < shadow and nodes_needed[q] <= free:
                                free -= nodes_needed[q]
                                start[q] = now
                                act[q] = now + run_s[q]
                                est[q] = now + request_s[q]
                                running[rn] = q
                                rn += 1
                                for m in range(qn):
                                    if queue[m] == q:
                                        queue[m] = queue[qn - 1]  # (the pick scans the whole queue)
                                        qn -= 1
                                        break
                    # one event: an arrival if it comes no later than the first end, else one release
                    _stable_sort_running(&running[0], rn, &act[0])
                    release = act[running[0]]
                    if nxt < n and submit[nxt] <= release:
                        if submit[nxt] > now:
                            now = submit[nxt]
                        queue[qn] = nxt
                        qn += 1
                        nxt += 1
                    else:
                        if release > now:
                            now = release
                        free += nodes_needed[running[0]]
                        for k in range(1, rn):
                            running[k - 1] = running[k]
                        rn -= 1
            # the committed job starts now
            for m in range(qn):
                if queue[m] == j:
                    queue[m] = queue[qn - 1]
                    qn -= 1
                    break
            free -= nodes_needed[j]
            start[j] = now
            act[j] = now + run_s[j]
            est[j] = now + request_s[j]
            running[rn] = j
            rn += 1
            if qn > 0:
                continue
            if nxt >= n:
                break
            # an empty queue: releases until exactly one arrival is added
            while True:
                release = NEVER
                if rn > 0:
                    _stable_sort_running(&running[0], rn, &act[0])
                    release = act[running[0]]
                if submit[nxt] <= release:
                    if submit[nxt] > now:
                        now = submit[nxt]
                    queue[qn] = nxt
                    qn += 1
                    nxt += 1
                    break
                if release > now:
                    now = release
                free += nodes_needed[running[0]]
                for k in range(1, rn):
                    running[k - 1] = running[k]
                rn -= 1
    return starts
