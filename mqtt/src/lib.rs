//! MQTT protocol handling shared by edge-agent and cloud-bridge.
