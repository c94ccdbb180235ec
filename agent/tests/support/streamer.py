# Publishes QoS 1 (MQTT 3.1.1, paho-mqtt 2.x, up to 20 in flight) payloads start,
# start+1, ... to a topic until the connection drops (or 200 000 messages); prints each
# acknowledged number. Arguments: port, start, topic, client id.
import sys, threading, paho.mqtt.client as mqtt
port, start, topic, client_id = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
done = threading.Event()
sent = {}
def on_publish(c, userdata, mid, rc, props):
    n = sent.pop(mid, None)
    if n is not None:
        print(n, flush=True)
def on_disconnect(c, userdata, flags, rc, props):
    done.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
c.max_inflight_messages_set(20)
c.on_publish = on_publish
c.on_disconnect = on_disconnect
c.connect("127.0.0.1", port, keepalive=30)
c.loop_start()
for i in range(200000):
    if done.is_set():
        break
    info = c.publish(topic, str(start + i).encode(), qos=1)
    sent[info.mid] = start + i
    while len(sent) > 40 and not done.is_set():
        done.wait(0.001)
done.wait(10)
c.loop_stop()
