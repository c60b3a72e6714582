# Dependencies: one edge settled when its parent ends. Included by _core.pyx.
#
# The child becomes eligible, waits for its think time (the begin-time heap),
# or, when its dependency can never be met, is cancelled. The rest of the
# topic is in ClusterState, which cannot be split across files:
# add_dependencies (edges, cycle check) and _parent_done (the walk over a
# parent's edges, cancelling transitively).


cdef int _settle_edge(ClusterState st, int e, int p, int64_t now) noexcept nogil:
    """Dependency edge ``e`` of parent ``p``, which ended at ``now``.

    Returns the child's slot if it was cancelled here (its dependency can
    never be met: afterok on a failure, afternotok on a success), -1
    otherwise, -2 when out of memory. afterany is met by any end, a
    cancellation included; a cancellation counts as not ok.
    """
    cdef int c = st.edges[e].child
    cdef int kind = st.edges[e].kind
    cdef int ok = st.end_ok[p]
    cdef int64_t ready
    st.dep_unmet[c] -= 1
    if kind == DEP_AFTERANY or (kind == DEP_AFTEROK and ok) or (kind == DEP_AFTERNOTOK and not ok):
        ready = now + st.edges[e].delay_s
        if ready > st.dep_ready[c]:
            st.dep_ready[c] = ready
        if (st.dep_unmet[c] == 0 and not st.dep_doomed[c] and st.job_state[c] == JS_HELD
                and st.hold_why[c] == WHY_DEPENDENCY):
            if st.dep_ready[c] <= now:
                if st._submit(c, now) != 0:
                    return -2
            else:
                st.hold_why[c] = WHY_BEGIN_TIME
                if heap_push(&st.begin_heap, st.dep_ready[c], c) != 0:
                    return -2
        return -1
    if st.dep_doomed[c]:
        return -1
    st.dep_doomed[c] = 1
    if st.job_state[c] == JS_HELD:
        st.job_state[c] = JS_CANCELLED
        st.dep_cancelled[c] = 1
        st.end_s[c] = now
        st.end_ok[c] = 0
        return c
    return -1  # not arrived yet: cancelled when it does
