"""How Chromium plays a page's remote WebRTC video, so that each received frame is painted once.

A template page shows each participant's camera in a ``<video>``. Measured with the sample
template (two 30 fps publishers, 30 fps output, ``tests/test_cadence_web.py``), 73-87 % of the
output frames of a tile showed the next source frame; the rest repeated one and skipped the
next. Chromium lets libwebrtc decode a frame only on its own 64 Hz timer (the "metronome"),
10 ms or so before the frame's render time, and its compositor then shows at each of the
display's refreshes (30 Hz here, :mod:`pyegress.sources.xdisplay`) the newest frame decoded: a
tile whose frames are released near a refresh lands on either side of it. Three changes, each
measured (``docs/motion.md``):

* ``--enable-features=VSyncDecoding`` (:data:`PLAYOUT_FLAGS`): frames are released for
  decoding on the page's own refreshes, so each is decoded in step with the paints;
* :data:`PLAYOUT_JS`: every receiver of the page asks libwebrtc for a jitter buffer of at
  least ``JITTER_TARGET_MS`` (``RTCRtpReceiver.jitterBufferTarget``, audio and video alike, so
  the page's own lip sync is kept): frames wait in it for a render time that follows their
  sender's clock, not the network's arrival. A recording does not need a call's low latency;
* :data:`KEEP_RATE_JS`: Chromium's compositor (viz, its "video conference" frame interval
  heuristic) lowers the page's refresh rate to its videos' when two or more play: two 15 fps
  tiles got 15 refreshes a second, and each switch between the rates (a tile late, the page
  changing) moved a tile by a refresh, a repeated frame in the recording. While any video of the
  page plays, a 1-pixel video of a canvas drawn at every refresh (opacity 1/255 in the top left
  corner: nothing shows) keeps the refreshes at the display's, the output's frame rate.
"""

from __future__ import annotations

__all__ = ["JITTER_TARGET_MS", "KEEP_RATE_JS", "PLAYOUT_FLAGS", "PLAYOUT_JS"]

#: Chromium's flag for decode release on the page's refreshes (off by default; Debian's Chromium 156 has it).
PLAYOUT_FLAGS = ("--enable-features=VSyncDecoding",)
#: Milliseconds of jitter buffer each remote track of a page is held at least: 150 measured
#: 93.9-97.2 % alone (73 % without); 300 and 600 were no better.
JITTER_TARGET_MS = 150

PLAYOUT_JS = (
    r"""
(() => {
  const Base = window.RTCPeerConnection;
  if (!Base || Base.__pyegress) return;
  class Steady extends Base {
    constructor(...args) {
      super(...args);
      this.addEventListener('track', (event) => {
        try { event.receiver.jitterBufferTarget = TARGET; } catch (e) { /* an older browser */ }
      });
    }
  }
  Steady.__pyegress = true;
  window.RTCPeerConnection = Steady;
  if (window.webkitRTCPeerConnection) window.webkitRTCPeerConnection = Steady;
})();
"""
).replace("TARGET", str(JITTER_TARGET_MS))

KEEP_RATE_JS = r"""
(() => {
  if (window.__pyegressKeepRate) return;
  window.__pyegressKeepRate = true;
  let keeper = null;
  const playing = () => Array.from(document.querySelectorAll('video')).some(
    (v) => v !== (keeper && keeper.video) && !v.paused && !v.ended);
  const draw = (k) => {
    if (keeper !== k) return;
    k.ctx.fillStyle = (k.frame++ & 1) ? '#000' : '#010101';
    k.ctx.fillRect(0, 0, 2, 2);
    requestAnimationFrame(() => draw(k));
  };
  const start = () => {
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 2;
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    video.setAttribute('aria-hidden', 'true');
    video.srcObject = canvas.captureStream();
    video.style.cssText = 'position:fixed;left:0;top:0;width:1px;height:1px;opacity:0.004;' +
      'pointer-events:none;z-index:2147483647;';
    keeper = {video, ctx: canvas.getContext('2d'), frame: 0};
    draw(keeper);
    document.documentElement.appendChild(video);
    video.play().catch(() => {});
  };
  const stop = () => {
    keeper.video.srcObject.getTracks().forEach((t) => t.stop());
    keeper.video.remove();
    keeper = null;
  };
  const check = () => {
    const want = playing();
    if (want && !keeper) start();
    else if (!want && keeper) stop();
  };
  for (const type of ['playing', 'pause', 'ended', 'emptied']) {
    document.addEventListener(type, () => setTimeout(check, 0), true);
  }
  setInterval(check, 1000);
})();
"""
