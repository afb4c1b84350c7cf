// A room composite template for pyegress (and LiveKit Egress): every participant's camera in a
// grid with their name, their audio played, layout "grid" (dark) or "grid-light".
//
// The template contract (the same as @livekit/egress-sdk's):
//   - the page is opened with ?url=<LiveKit ws URL>&token=<recorder token>&layout=<layout>;
//   - it logs START_RECORDING once connected and drawn, END_RECORDING when the room ends;
//   - layout changes arrive as the recorder participant's metadata {"layout": ...} (what
//     egress-sdk listens to) and, from pyegress, also as a "pyegress:layout" window event
//     (with ?layout= already updated in the address bar).
import { ParticipantEvent, Room, RoomEvent, Track } from "livekit-client";

const query = new URLSearchParams(window.location.search);
const grid = document.getElementById("grid");
const tiles = new Map(); // identity -> {tile, video, joined}
let layout = query.get("layout") || "grid";

function applyLayout(name) {
  layout = name || "grid";
  document.body.classList.toggle("light", layout.endsWith("-light"));
}

function tileFor(participant) {
  let entry = tiles.get(participant.identity);
  if (!entry) {
    const tile = document.createElement("div");
    tile.className = "tile";
    const video = document.createElement("video");
    video.autoplay = true;
    video.muted = true; // sound goes through the participant's <audio> element
    video.playsInline = true;
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = participant.name || participant.identity;
    tile.append(video, name);
    entry = { tile, video, joined: joinedMs(participant) };
    tiles.set(participant.identity, entry);
    reflow();
  }
  return entry;
}

// Join time in ms: `joinedAt` has whole seconds only, so participants who join within one second
// would tie and land in the order their tracks happened to arrive.
function joinedMs(participant) {
  const ms = Number(participant.participantInfo?.joinedAtMs ?? 0);
  if (ms > 0) return ms;
  return participant.joinedAt ? participant.joinedAt.getTime() : Date.now();
}

function reflow() {
  const entries = [...tiles.values()].sort((a, b) => a.joined - b.joined);
  const n = Math.max(entries.length, 1);
  const cols = Math.ceil(Math.sqrt(n));
  const rows = Math.ceil(n / cols);
  grid.style.gridTemplateColumns = `repeat(${cols}, 1fr)`;
  grid.style.gridTemplateRows = `repeat(${rows}, 1fr)`;
  grid.replaceChildren(...entries.map((e) => e.tile));
}

function removeParticipant(participant) {
  const entry = tiles.get(participant.identity);
  if (entry) {
    tiles.delete(participant.identity);
    reflow();
  }
}

function layoutFromMetadata(metadata) {
  try {
    const state = JSON.parse(metadata || "{}");
    if (state.layout && state.layout !== layout) applyLayout(state.layout);
  } catch (e) {
    console.warn("bad recorder metadata", e);
  }
}

async function main() {
  const url = query.get("url");
  const token = query.get("token");
  if (!url || !token) throw new Error("url and token are required in the query string");
  applyLayout(layout);
  const room = new Room({ adaptiveStream: false, dynacast: false });
  room
    .on(RoomEvent.ParticipantConnected, (p) => tileFor(p))
    .on(RoomEvent.ParticipantDisconnected, (p) => removeParticipant(p))
    .on(RoomEvent.TrackSubscribed, (track, _pub, participant) => {
      if (track.kind === Track.Kind.Video && track.source === Track.Source.Camera) {
        track.attach(tileFor(participant).video);
      } else if (track.kind === Track.Kind.Audio) {
        const el = track.attach();
        el.style.display = "none";
        document.body.appendChild(el);
      }
    })
    .on(RoomEvent.TrackUnsubscribed, (track) => {
      for (const el of track.detach()) {
        if (el.tagName === "AUDIO") el.remove();
      }
    })
    .on(RoomEvent.Disconnected, () => console.log("END_RECORDING"));
  window.addEventListener("pyegress:layout", (e) => applyLayout(e.detail));
  await room.connect(url, token, { autoSubscribe: true });
  room.localParticipant.on(ParticipantEvent.ParticipantMetadataChanged, () =>
    layoutFromMetadata(room.localParticipant.metadata),
  );
  layoutFromMetadata(room.localParticipant.metadata);
  for (const p of room.remoteParticipants.values()) tileFor(p);
  reflow();
  requestAnimationFrame(() => console.log("START_RECORDING"));
}

main().catch((e) => console.error("template failed:", e));
