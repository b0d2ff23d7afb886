"""Temporary probe 2: wall vs CPU (thread_time) across the gateway's receive->context-created leg and the
worker's inputs_open->text_sent->wire_sent legs. Reverted with git checkout after the run."""
def sub(p, old, new):
    s = open(p).read(); assert old in s, (p, old); open(p, "w").write(s.replace(old, new, 1))
g = "services/gateway/native/handler.py"
sub(g, '''        if data is None:
            return
        cmd: m.Command | None = None''', '''        if data is None:
            return
        import time as _t; _probe_rx = _t.monotonic(); _probe_cpu = _t.thread_time()  # PROBE
        cmd: m.Command | None = None''')
sub(g, '''            cmd = m.parse(data)
            await _apply(sock.ws, session, cmd, clocks, trace_parent)''', '''            cmd = m.parse(data)
            if isinstance(cmd, m.Start):  # PROBE
                session._probe = (_probe_rx, _probe_cpu)
            await _apply(sock.ws, session, cmd, clocks, trace_parent)''')
s = "services/gateway/session.py"
sub(s, '''        ctx = ContextState(request=request, session_id=self.id, tenant=self.tenant)''', '''        ctx = ContextState(request=request, session_id=self.id, tenant=self.tenant)
        _pr = getattr(self, "_probe", None)  # PROBE
        if _pr is not None:
            log.info("gw_probe", probe_session=self.id, wall_ms=round((ctx.created_at - _pr[0]) * 1000, 3),
                     cpu_ms=round((time.thread_time() - _pr[1]) * 1000, 3))
            self._probe = None''')
j = "services/worker/job.py"
sub(j, '''            self.trace.inputs_open()''', '''            self.trace.inputs_open()
            self._probe = [time.monotonic(), time.thread_time()]  # PROBE''')
sub(j, '''            await stream.send_text(spec.text, flush=spec.flush)
            self.trace.text_sent(spec.text)''', '''            _t0 = (time.monotonic(), time.thread_time())  # PROBE: the feeder starts
            await stream.send_text(spec.text, flush=spec.flush)
            self.trace.text_sent(spec.text)
            _t1 = (time.monotonic(), time.thread_time())
            _p = getattr(self, "_probe", None)
            if _p is not None:
                log.info("wk_probe", open_to_feeder_wall=round((_t0[0] - _p[0]) * 1000, 3),
                         open_to_feeder_cpu=round((_t0[1] - _p[1]) * 1000, 3),
                         feeder_send_wall=round((_t1[0] - _t0[0]) * 1000, 3),
                         feeder_send_cpu=round((_t1[1] - _t0[1]) * 1000, 3))''')
