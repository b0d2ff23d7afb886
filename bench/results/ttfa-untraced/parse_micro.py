"""CPU per first chunk on the worker's receive path: parse_frame of an emulator audio frame (24,000 bytes of
pcm_24000 + whole-text alignment), best of 5 x 2000."""
import base64, time, sys
sys.path[:0] = ["/work/wt-ttfa/services", "/work/wt-ttfa"]
from emulator.protocol import audio_frame
from worker.providers.elevenlabs.messages import parse_frame
text = "Thanks for calling, how can I help you with your order today? " * 1
n = len(text)
al = {"chars": list(text), "charStartTimesMs": [i * 60 for i in range(n)], "charDurationsMs": [60] * n}
frame = audio_frame(base64.b64encode(bytes(24000)), al, "ctx-1").decode()
best = 1e9
for _ in range(5):
    t = time.perf_counter()
    for _ in range(2000):
        parse_frame(frame)
    best = min(best, (time.perf_counter() - t) / 2000)
print(f"parse_frame: {best * 1e6:.1f} us per first chunk ({len(frame)} bytes)")
