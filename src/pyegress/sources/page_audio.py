"""The page's sound: an init script taps every AudioContext and media element, Python sums them.

Headless Chromium has no sound device to record, so an init script routes every
``AudioContext``'s output and every playing ``<audio>`` / ``<video>`` element through a capture
node that hands 48 kHz int16 PCM to Python (``window.__pyegressPcm``); each context becomes
one timeline input of :class:`PageAudio`.
"""

from __future__ import annotations

import numpy as np

from ..media.mixer import add_clipped
from ..media.timeline import AudioInput

# Every AudioContext (the page's, and one for media elements) gets a capture tap in front of
# its destination: a ScriptProcessor that sends interleaved stereo int16 PCM (48 kHz, base64)
# to Python with the context's id. Media elements playing a MediaStream (WebRTC audio) are
# tapped with createMediaStreamSource, others with createMediaElementSource.
AUDIO_CAPTURE_JS = r"""
(() => {
  const Base = window.AudioContext || window.webkitAudioContext;
  if (!Base || Base.__pyegress) return;
  const realDestination = Object.getOwnPropertyDescriptor(BaseAudioContext.prototype, 'destination').get;
  let contexts = 0;
  class Captured extends Base {
    constructor(options) {
      super(Object.assign({}, options || {}, {sampleRate: 48000}));
      const id = ++contexts;
      const tap = this.createGain();
      const proc = this.createScriptProcessor(1024, 2, 2);
      tap.connect(proc);
      proc.connect(realDestination.call(this));
      proc.onaudioprocess = (e) => {
        const l = e.inputBuffer.getChannelData(0), r = e.inputBuffer.getChannelData(1);
        const pcm = new Int16Array(l.length * 2);
        for (let i = 0; i < l.length; i++) {
          pcm[2 * i] = Math.max(-1, Math.min(1, l[i])) * 32767;
          pcm[2 * i + 1] = Math.max(-1, Math.min(1, r[i])) * 32767;
        }
        const bytes = new Uint8Array(pcm.buffer);
        let text = '';
        for (let i = 0; i < bytes.length; i += 0x8000) {
          text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
        }
        try { window.__pyegressPcm(id, btoa(text)); } catch (err) {}
      };
      Object.defineProperty(this, 'destination', {get: () => tap});
    }
  }
  Captured.__pyegress = true;
  window.AudioContext = Captured;
  window.webkitAudioContext = Captured;

  let elementContext = null;
  const tapped = new Map();  // element -> {stream, node}
  function tapElement(el) {
    if (!(el instanceof HTMLMediaElement)) return;
    const prev = tapped.get(el);
    const stream = el.srcObject;
    if (stream instanceof MediaStream) {
      const live = !el.muted && el.volume > 0 && stream.getAudioTracks().length > 0;
      if (prev && prev.stream === stream && !!prev.node === live) return;
      if (prev && prev.node) prev.node.disconnect();
      let node = null;
      if (live) {
        elementContext = elementContext || new Captured();
        node = elementContext.createMediaStreamSource(stream);
        node.connect(elementContext.destination);
      }
      tapped.set(el, {stream, node});
    } else if (!prev && (el.currentSrc || el.src)) {
      elementContext = elementContext || new Captured();
      const node = elementContext.createMediaElementSource(el);
      node.connect(elementContext.destination);
      tapped.set(el, {stream: null, node});
    }
    if (elementContext && elementContext.state === 'suspended') elementContext.resume();
  }
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function () {
    try { tapElement(this); } catch (err) {}
    return play.apply(this, arguments);
  };
  setInterval(() => {
    try {
      document.querySelectorAll('audio, video').forEach(tapElement);
      for (const el of tapped.keys()) tapElement(el);
    } catch (err) {}
  }, 250);
})();
"""


class PageAudio:
    """The page's sound: one timeline input per capturing AudioContext, summed when read."""

    def __init__(self, sample_rate: int, channels: int, t0: float) -> None:
        self.sample_rate, self.channels, self.t0 = sample_rate, channels, t0
        self.inputs: dict[int, AudioInput] = {}

    def push(self, context: int, pcm: np.ndarray, arrival: float) -> None:
        """Samples of one AudioContext that finished arriving at monotonic ``arrival``."""
        sink = self.inputs.get(context)
        if sink is None:
            sink = self.inputs[context] = AudioInput(self.sample_rate, self.channels, self.t0)
        sink.push(pcm, arrival)

    def read(self, start: int, count: int) -> np.ndarray:
        chunks = [i.read(start, count) for i in list(self.inputs.values())]
        if not chunks:
            return np.zeros((count, self.channels), np.int16)
        return add_clipped(chunks)
