"""Capture: devices and file sources that stamp what they capture and push it on.

Modules (import what you use; nothing here is imported eagerly, so listing devices
does not pay for opencv and a missing PortAudio breaks nothing until audio is used):

* sinks.py       what sources push into (AudioSink, FrameSink) and the events they send
* base.py        the lifecycle every source shares, and CaptureError
* camera.py      CameraSource: a camera on its own thread (opencv)
* microphone.py  MicrophoneSource: a PortAudio input stream (sounddevice)
* files.py       FileVideoSource, FileAudioSource: files replayed as if they were devices
* replay.py      ReplayClock: real-time or as-fast-as-possible pacing for file sources
* sources.py     video_source(), audio_source(): from a user's --camera/--mic to a source
* devices.py     list_cameras(), list_audio_devices(), resolve_input_device()
* portaudio.py   load_sounddevice(): the lazy, guarded import of sounddevice
"""
