// The webcam: a stream into a <video>, frames as JPEG blobs.

/** Start the camera into `video`; returns a function that stops it. */
export async function startCamera(video) {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("This browser gives no camera to this page. Use Chrome, Edge or Firefox at http://127.0.0.1.");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    throw new Error(`The camera could not be opened (${error.name}). Allow the camera for this page, or plug one in.`);
  }
  video.srcObject = stream;
  await video.play();
  return () => {
    for (const track of stream.getTracks()) track.stop();
    video.srcObject = null;
  };
}

const canvas = document.createElement("canvas");

/** The frame `video` shows now, as a JPEG blob at most `size` pixels wide. */
export function grabFrame(video, size = 320, quality = 0.85) {
  const scale = Math.min(1, size / (video.videoWidth || size));
  canvas.width = Math.round((video.videoWidth || size) * scale);
  canvas.height = Math.round((video.videoHeight || size * 0.75) * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("The webcam frame could not be encoded."))), "image/jpeg", quality);
  });
}

export const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
