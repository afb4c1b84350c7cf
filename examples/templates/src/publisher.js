// A browser participant for pyegress's tests (pyegress.testing.BrowserPublisher): livekit-client
// in Chromium publishing what a browser publishes by default (VP8 with simulcast, Opus with DTX)
// from a canvas and a WebAudio graph instead of a camera and a microphone.
//
// Everything about the signal comes from Python (window.pyegressPublish(config)): the pattern's
// pixels, its speed, the marker interval and length, the tone and beep frequencies and levels,
// so the picture is pyegress.testing.signals.PatternGenerator's, shifted the same way.
import { Room, Track } from "livekit-client";

function inMarker(t, c) {
  // pyegress.testing.signals.in_marker
  if (c.markerInterval <= 0 || t < c.markerInterval - 1e-9) return false;
  const phase = t - Math.floor(t / c.markerInterval + 1e-9) * c.markerInterval;
  return phase < c.markerDuration - 1e-9;
}

function patternCanvas(c) {
  const base = document.createElement("canvas");
  base.width = c.width;
  base.height = c.height;
  const bytes = Uint8ClampedArray.from(atob(c.rgba), (ch) => ch.charCodeAt(0));
  base.getContext("2d").putImageData(new ImageData(bytes, c.width, c.height), 0, 0);
  return base;
}

// Draws frame k (time k / fps) on its due time, like SyntheticPublisher's pacer: the shift is
// PatternGenerator's, 2 * floor(floor(t * speed + 1e-6) / 2) px to the right, wrapping around.
function startPicture(c, t0) {
  const canvas = document.getElementById("canvas");
  canvas.width = c.width;
  canvas.height = c.height;
  const ctx = canvas.getContext("2d", { alpha: false, willReadFrequently: true });
  const base = patternCanvas(c);
  // every drawn picture is one frame of the track, written as a VideoFrame (Chromium's
  // MediaStreamTrackGenerator): canvas.captureStream(30) samples the canvas on the compositor's
  // clock, which in headless Chromium took 15-20 of the 30 pictures a second, and
  // captureStream(0) + requestFrame() still repeated or dropped 10-35 % of them under load
  const track = new MediaStreamTrackGenerator({ kind: "video" });
  const writer = track.writable.getWriter();
  let k = 0;
  const draw = () => {
    const late = (performance.now() - t0) / 1000 - k / c.fps;
    if (late > 2 / c.fps) k += Math.floor(late * c.fps); // stalled: skip ahead, no burst
    const t = k / c.fps;
    if (inMarker(t, c)) {
      ctx.fillStyle = c.flash;
      ctx.fillRect(0, 0, c.width, c.height);
    } else {
      const shift = 2 * Math.floor(Math.floor(t * c.speed + 1e-6) / 2) % c.width;
      ctx.drawImage(base, shift, 0);
      if (shift) ctx.drawImage(base, shift - c.width, 0);
    }
    // from the canvas's pixels: a VideoFrame of the canvas element itself sometimes still showed
    // the picture before (12 of 194 frames), reading the pixels back waits for this one
    const pixels = ctx.getImageData(0, 0, c.width, c.height).data;
    const frame = new VideoFrame(pixels, {
      format: "RGBA",
      codedWidth: c.width,
      codedHeight: c.height,
      timestamp: Math.round(performance.now() * 1000),
    });
    writer.write(frame).catch(() => frame.close()); // the track ended: stopping
    window.pyegressFrames = (window.pyegressFrames || 0) + 1;
    k += 1;
    setTimeout(draw, Math.max(0, t0 + (k * 1000) / c.fps - performance.now()));
  };
  setTimeout(draw, Math.max(0, t0 - performance.now()));
  return track;
}

// A quiet tone, replaced by a loud beep during each marker: gains scheduled on the audio clock
// at the instants the picture flashes (the audio clock mapped onto performance.now()).
async function startSound(c, t0) {
  const audio = new AudioContext({ sampleRate: 48000 });
  await audio.resume();
  const toContext = (perfMs) => audio.currentTime + (perfMs - performance.now()) / 1000;
  const out = audio.createMediaStreamDestination();
  const voice = (hz, level) => {
    const osc = new OscillatorNode(audio, { frequency: hz });
    const gain = new GainNode(audio, { gain: level });
    osc.connect(gain).connect(out);
    osc.start();
    return gain.gain;
  };
  const tone = voice(c.toneHz, c.toneAmplitude);
  const beep = voice(c.beepHz, 0);
  let n = 1;
  const schedule = () => {
    // markers of the next two seconds, each scheduled once
    while (c.markerInterval > 0 && n * c.markerInterval * 1000 < performance.now() - t0 + 2000) {
      const on = toContext(t0 + n * c.markerInterval * 1000);
      const off = on + c.markerDuration;
      if (on > audio.currentTime) {
        beep.setValueAtTime(c.beepAmplitude, on);
        beep.setValueAtTime(0, off);
        tone.setValueAtTime(0, on);
        tone.setValueAtTime(c.toneAmplitude, off);
      }
      n += 1;
    }
  };
  schedule();
  setInterval(schedule, 500);
  window.pyegressAudio = audio;
  return out.stream.getAudioTracks()[0];
}

window.pyegressPublish = async (c) => {
  const room = new Room({ adaptiveStream: false, dynacast: true });
  window.pyegressRoom = room;
  await room.connect(c.url, c.token, { autoSubscribe: false });
  const t0 = performance.now() + c.startLead * 1000;
  const result = { identity: room.localParticipant.identity, t0Ago: 0 };
  // browser defaults on purpose: VP8, simulcast, Opus with DTX (and RED); only the frame rate
  // and bitrate are set, as livekit-client's preset for 640x360 would send 20 fps
  if (c.video) {
    const pub = await room.localParticipant.publishTrack(startPicture(c, t0), {
      name: "camera",
      source: Track.Source.Camera,
      videoEncoding: { maxBitrate: c.maxBitrate, maxFramerate: c.fps },
    });
    result.videoSid = pub.trackSid;
  }
  if (c.audio) {
    const pub = await room.localParticipant.publishTrack(await startSound(c, t0), {
      name: "microphone",
      source: Track.Source.Microphone,
    });
    result.audioSid = pub.trackSid;
  }
  result.t0Ago = (performance.now() - t0) / 1000;
  return result;
};

// What the browser's encoder does with the picture, per simulcast layer (frame rate, size and
// why it is limited): a browser adapts to CPU and bandwidth, which is part of what is tested.
window.pyegressStats = async () => {
  const out = [];
  for (const pub of window.pyegressRoom.localParticipant.trackPublications.values()) {
    if (pub.track && pub.track.kind === Track.Kind.Video) {
      for (const s of await pub.track.getSenderStats()) {
        out.push({ rid: s.rid, fps: s.framesPerSecond, width: s.frameWidth, height: s.frameHeight,
          framesSent: s.framesSent, limitation: s.qualityLimitationReason });
      }
    }
  }
  return out;
};

window.pyegressStop = async () => {
  if (window.pyegressRoom) await window.pyegressRoom.disconnect();
};
