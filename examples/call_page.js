// What the examples' voice pages share (voice.html, live_voice.html): the browser's
// side of a WebRTC call whose session the app creates with its own key - this script
// never sees one. Each page keeps what is its own: how it reads the API's events.
//
// A page has #start, #hangup, #status and #log, and an <audio id="speaker">; it calls
// CallPage.start({...}) from #start and CallPage.hangUp from #hangup. No framework, no
// build step: the Flask and Django examples serve this file as /call_page.js.
"use strict";

const CallPage = (() => {
  const $ = (id) => document.getElementById(id);
  const call = {
    pc: null,        // the RTCPeerConnection: this user's call
    channel: null,   // its "oai-events" data channel
    mic: null,       // the microphone stream
    id: null,        // the app's name for the call (for hang-up)
    hungUp: false,   // we asked the app to end the call
    onEnd: null,     // the page's own clean-up
  };

  function setState(state, detail) {
    document.body.dataset.state = state;  // idle, connecting, connected, ended, failed
    $("status").textContent = detail ? `${state} - ${detail}` : state;
  }

  function show(who, text) {
    const line = document.createElement("li");
    line.className = who;
    line.textContent = `${who}: ${text}`;
    $("log").append(line);
    return line;
  }

  // The API takes no trickled candidates: post the offer once gathering is complete,
  // or has stalled for timeoutMs (the candidates gathered by then are what it offers).
  function iceGathering(peer, timeoutMs = 5000) {
    return new Promise((resolve) => {
      const check = () => {
        if (peer.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      };
      const timer = setTimeout(resolve, timeoutMs);
      peer.addEventListener("icegatheringstatechange", check);
      check();
    });
  }

  // Why a call has no network path, and what to do. Chromium offers no 127.0.0.1
  // candidate unless started with --allow-loopback-in-peer-connection, so a machine (or
  // a container) whose only interface is loopback offers none at all; the offline
  // emulator offers only 127.0.0.1 itself.
  const LOOPBACK_FIX = "this page is on 127.0.0.1 (and so, offline, is the emulator), and " +
    "Chromium offers 127.0.0.1 to WebRTC only when started with " +
    "--allow-loopback-in-peer-connection: restart it with that flag, or use a browser with " +
    "a network interface the API can reach.";

  function iceFailure(stage, host) {
    const what = stage === "gathering"
      ? "No network address to offer for the call (ICE gathered no candidate)"
      : "The call's network path failed (no ICE candidate pair connected)";
    const loopback = host === "localhost" || host === "[::1]" || host.startsWith("127.");
    if (loopback) return `${what}: ${LOOPBACK_FIX}`;
    return `${what}: check that this machine has a network interface that can reach ` +
      "the API, and that no firewall or browser setting hides it from WebRTC.";
  }

  // Django's CSRF protection: its token comes with the page as the csrftoken cookie and
  // goes back as a header on every POST (the Flask app sets no such cookie).
  function postHeaders(headers = {}) {
    const cookie = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
    if (cookie) headers["X-CSRFToken"] = decodeURIComponent(cookie.slice("csrftoken=".length));
    return headers;
  }

  // Take the microphone, offer the call to the app (POST calls: it creates the call and
  // answers with the API's SDP), and hand each server event to onEvent. onOpen runs
  // when the data channel opens; onEnd when the call ends, however it ends.
  async function start({ onEvent, onOpen = () => {}, onEnd = () => {}, ended = "the call ended" }) {
    $("start").disabled = true;
    call.onEnd = onEnd;
    setState("connecting");
    try {
      call.mic = await navigator.mediaDevices.getUserMedia({ audio: true });
      const pc = (call.pc = new RTCPeerConnection({ iceServers: [] }));
      call.channel = pc.createDataChannel("oai-events");  // before the offer: in it
      call.channel.onopen = onOpen;
      call.channel.onmessage = (message) => onEvent(JSON.parse(message.data));
      call.channel.onclose = () => end(call.hungUp ? "you hung up" : ended);
      pc.addTransceiver(call.mic.getAudioTracks()[0], { direction: "sendrecv", streams: [call.mic] });
      pc.ontrack = (event) => { $("speaker").srcObject = new MediaStream([event.track]); };
      pc.onconnectionstatechange = () => {
        if (pc.connectionState !== "failed") return;
        const why = iceFailure("connecting", location.hostname);
        show("error", why);
        end(why, "failed");
      };

      await pc.setLocalDescription(await pc.createOffer());
      await iceGathering(pc);
      if (!/^a=candidate:/m.test(pc.localDescription.sdp)) {
        throw new Error(iceFailure("gathering", location.hostname));  // nothing is created
      }
      const reply = await fetch("calls", {
        method: "POST",
        headers: postHeaders({ "Content-Type": "application/sdp" }),
        body: pc.localDescription.sdp,
      });
      const body = await reply.json();
      if (!reply.ok) throw new Error(body.error.message);
      call.id = body.call_id;
      $("hangup").disabled = false;
      // the first events can come as soon as the channel opens: onEvent is in place
      await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    } catch (error) {
      show("error", error.message);
      end(error.message, "failed");
    }
  }

  async function hangUp() {
    $("hangup").disabled = true;
    call.hungUp = true;
    try {
      await fetch(`calls/${encodeURIComponent(call.id)}/hangup`, {
        method: "POST",
        headers: postHeaders(),
      });
    } finally {
      end("you hung up");  // closing our peer connection ends the call anyway
    }
  }

  // One call per page load: reload the page for a new one.
  function end(reason, state = "ended") {
    if (["ended", "failed"].includes(document.body.dataset.state)) return;
    if (call.pc) call.pc.close();
    if (call.mic) call.mic.getTracks().forEach((track) => track.stop());
    $("hangup").disabled = true;
    if (call.onEnd) call.onEnd();
    setState(state, reason);
  }

  return { $, call, setState, show, postHeaders, start, hangUp, end };
})();
