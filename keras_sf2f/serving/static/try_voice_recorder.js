// The recorder of the "Try your voice" page: an AudioWorklet processor (it runs on the audio
// rendering thread, so no sample is lost while the page's main thread is busy).
//
// It mixes its input down to mono and posts it to the page in blocks of about 4096 frames (one
// message per 128-frame render quantum would be hundreds a second). On the message "flush" it
// posts what it still holds with {done: true}, the end of the recording.
"use strict";

const BLOCK = 4096;

class Sf2fRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(BLOCK);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        this.port.postMessage({done: true, samples: this.block.slice(0, this.filled)});
        this.filled = 0;
      }
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) {
      const frames = channels[0].length;
      for (let i = 0; i < frames; i++) {
        let sum = 0;
        for (let c = 0; c < channels.length; c++) sum += channels[c][i];
        this.block[this.filled++] = sum / channels.length;
        if (this.filled === BLOCK) {
          this.port.postMessage({done: false, samples: this.block});
          this.block = new Float32Array(BLOCK);
          this.filled = 0;
        }
      }
    }
    return true;  // keep running until the page disconnects the node
  }
}

registerProcessor("sf2f-recorder", Sf2fRecorder);
