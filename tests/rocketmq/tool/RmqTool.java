// A plain Apache RocketMQ producer/consumer for the interop tests, on the official Java client.
// Built and run by tests/rocketmq/rocketmq.sh (`rocketmq.sh tool <cmd> ...`, which appends
// -n <namesrv> --broker-addr <broker>). Output: one JSON object per line on stdout; errors on
// stderr with a non-zero exit status (2: bad usage). Client logs go to run/logs/tool/.
//
//   consume --topic T --count N --timeout-ms M [--from-start|--from-end] [--group G]
//           [--origin MQTT_TOPIC]  (only messages whose originMqttTopic is that; counted)
//   produce --topic T (--body B | --body-base64 B64) [--prop K=V]... [--keys K] [--tag TAG]
//   max-offset --topic T [--queue Q]          (T may be an LMQ such as %LMQ%t1%a%)
//   pull --topic T [--queue Q] [--offset O] [--max N] [--group G]  (one PULL_MESSAGE; LMQ ok)
//   bench-produce --topic T [--threads 10] [--size 100] [--seconds 10] [--warmup-seconds 3] [--lmq]
//                 [--inflight N]  (async sends, N in flight, instead of --threads sync senders)
//   get-kv [--namespace LMQ] --key K          (name server kvconfig; value null when absent)
//   put-kv [--namespace LMQ] --key K --value V
//   wait-ready [--broker ADDR] [--timeout-ms M]  (broker registered in the name server)
//   mqadmin ARGS...                           (MQAdminStartup, used by `rocketmq.sh admin`)
// max-offset and pull find the broker through the route of the topic (for an LMQ: of its
// first-level topic, LMQs are not in the name server), else use --broker / --broker-addr.
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.rocketmq.client.consumer.DefaultMQPullConsumer;
import org.apache.rocketmq.client.consumer.PullResult;
import org.apache.rocketmq.client.exception.MQBrokerException;
import org.apache.rocketmq.client.exception.MQClientException;
import org.apache.rocketmq.client.impl.CommunicationMode;
import org.apache.rocketmq.client.impl.MQClientAPIImpl;
import org.apache.rocketmq.client.impl.consumer.PullResultExt;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.MixAll;
import org.apache.rocketmq.common.TopicConfig;
import org.apache.rocketmq.common.message.*;
import org.apache.rocketmq.common.sysflag.PullSysFlag;
import org.apache.rocketmq.remoting.protocol.header.PullMessageRequestHeader;
import org.apache.rocketmq.remoting.protocol.route.BrokerData;
import org.apache.rocketmq.remoting.protocol.route.TopicRouteData;
import org.apache.rocketmq.tools.command.MQAdminStartup;

@SuppressWarnings("deprecation")
public final class RmqTool {
    private static final Set<String> FLAGS = Set.of("--from-start", "--from-end", "--lmq");
    private final Map<String, List<String>> opts = new HashMap<>();
    private final String namesrv;

    private RmqTool(String[] args) {
        for (int i = 1; i < args.length; i++) {
            String k = args[i];
            if (!k.startsWith("-")) throw new IllegalArgumentException("unexpected argument: " + k);
            String v = FLAGS.contains(k) ? "true" : (i + 1 < args.length ? args[++i] : null);
            if (v == null) throw new IllegalArgumentException("missing value for " + k);
            opts.computeIfAbsent(k, x -> new ArrayList<>()).add(v);
        }
        namesrv = opt("-n", System.getenv().getOrDefault("ROCKETMQ_NAMESRV", "127.0.0.1:19876"));
    }

    private String opt(String k, String dflt) {
        List<String> v = opts.get(k);
        return v == null ? dflt : v.get(v.size() - 1);
    }

    private String req(String k) {
        String v = opt(k, null);
        if (v == null) throw new IllegalArgumentException("missing required option " + k);
        return v;
    }

    private long num(String k, long dflt) {
        return Long.parseLong(opt(k, Long.toString(dflt)));
    }

    public static void main(String[] args) {
        int rc;
        try {
            if (args.length == 0) throw new IllegalArgumentException("usage: RmqTool consume|produce|"
                + "max-offset|pull|bench-produce|get-kv|put-kv|wait-ready|mqadmin [options]");
            if (args[0].equals("mqadmin")) { // without MQAdminStartup's ~3 s client shutdown
                MQAdminStartup.main0(Arrays.copyOfRange(args, 1, args.length), null);
                System.out.flush();
                Runtime.getRuntime().halt(0);
            }
            RmqTool t = new RmqTool(args);
            rc = switch (args[0]) {
                case "consume" -> t.consume();
                case "produce" -> t.produce();
                case "max-offset" -> t.maxOffset();
                case "pull" -> t.pull();
                case "bench-produce" -> t.benchProduce();
                case "get-kv", "put-kv" -> t.kv(args[0].equals("put-kv"));
                case "wait-ready" -> t.waitReady();
                default -> throw new IllegalArgumentException("unknown subcommand " + args[0]);
            };
        } catch (IllegalArgumentException e) {
            System.err.println("RmqTool: " + e.getMessage());
            rc = 2;
        } catch (Throwable e) {
            System.err.println("RmqTool: " + e);
            rc = 1;
        }
        System.out.flush();
        Runtime.getRuntime().halt(rc); // client threads are not daemons: do not wait for them
    }

    // ------------------------------------------------------------------ clients
    private DefaultMQProducer producer(String group) throws MQClientException {
        DefaultMQProducer p = new DefaultMQProducer(group);
        p.setNamesrvAddr(namesrv);
        p.setInstanceName("rmqtool-" + ProcessHandle.current().pid());
        p.setSendMsgTimeout(10_000);
        p.setRetryTimesWhenSendFailed(2);
        p.setVipChannelEnabled(false);
        p.start();
        return p;
    }

    private static MQClientAPIImpl api(DefaultMQProducer p) {
        return p.getDefaultMQProducerImpl().getMqClientFactory().getMQClientAPIImpl();
    }

    /** {address, name} of the master broker serving topic. */
    private String[] brokerFor(MQClientAPIImpl api, String topic) {
        if (opt("--broker", null) != null) return new String[] {opt("--broker", null), opt("--broker-name", "")};
        String routeTopic = topic;
        if (MixAll.isLmq(topic)) { // %LMQ%first%... -> first
            String rest = topic.substring(MixAll.LMQ_PREFIX.length());
            routeTopic = rest.indexOf('%') < 0 ? rest : rest.substring(0, rest.indexOf('%'));
        }
        try {
            if (!routeTopic.isEmpty()) {
                TopicRouteData r = api.getTopicRouteInfoFromNameServer(routeTopic, 3000);
                for (BrokerData b : r.getBrokerDatas()) {
                    String addr = b.getBrokerAddrs().get(MixAll.MASTER_ID);
                    if (addr != null) return new String[] {addr, b.getBrokerName()};
                }
            }
        } catch (Exception e) {
            System.err.println("RmqTool: no route for " + routeTopic + ", using --broker-addr (" + e.getMessage() + ")");
        }
        return new String[] {req("--broker-addr"), opt("--broker-name", "")};
    }

    // ------------------------------------------------------------------ subcommands
    private int consume() throws Exception {
        // DefaultMQPullConsumer: offsets are ours, no background pull tasks. (A LitePull
        // consumer's seek() races with its first long-polling pull at the group's start
        // offset and can stall until the next message arrives.)
        String topic = req("--topic");
        long count = num("--count", 1), deadline = System.currentTimeMillis() + num("--timeout-ms", 10_000);
        String origin = opt("--origin", null); // only messages of this MQTT topic
        DefaultMQPullConsumer c = new DefaultMQPullConsumer(opt("--group", "rmqtool_consume_"
            + ProcessHandle.current().pid() + "_" + ThreadLocalRandom.current().nextInt(1_000_000)));
        c.setNamesrvAddr(namesrv);
        c.setInstanceName("rmqtool-" + ProcessHandle.current().pid());
        c.setVipChannelEnabled(false);
        c.start();
        Map<MessageQueue, Long> next = new TreeMap<>();
        while (next.isEmpty()) { // the topic may not exist yet
            try {
                for (MessageQueue mq : c.fetchSubscribeMessageQueues(topic)) {
                    next.put(mq, opts.containsKey("--from-end") ? c.maxOffset(mq) : 0L);
                }
            } catch (MQClientException e) {
                if (System.currentTimeMillis() > deadline) {
                    System.err.println("RmqTool: topic " + topic + " not found: " + e.getErrorMessage());
                    return 1;
                }
                Thread.sleep(200);
            }
        }
        long got = 0;
        while (true) {
            boolean any = false;
            for (Map.Entry<MessageQueue, Long> e : next.entrySet()) {
                PullResult r = c.pull(e.getKey(), "*", e.getValue(), 32, 5000);
                e.setValue(r.getNextBeginOffset());
                for (MessageExt m : r.getMsgFoundList() == null ? List.<MessageExt>of() : r.getMsgFoundList()) {
                    if (origin != null && !origin.equals(m.getProperty("originMqttTopic"))) continue;
                    System.out.println(messageJson(m));
                    any = true;
                    if (++got >= count) return 0;
                }
            }
            if (System.currentTimeMillis() > deadline) {
                System.err.println("RmqTool: timeout: got " + got + " of " + count + " messages from " + topic);
                return 1;
            }
            if (!any) Thread.sleep(100);
        }
    }

    private int produce() throws Exception {
        String topic = req("--topic"), b64 = opt("--body-base64", null);
        byte[] body = b64 != null ? Base64.getDecoder().decode(b64) : req("--body").getBytes(StandardCharsets.UTF_8);
        Message msg = new Message(topic, opt("--tag", ""), opt("--keys", ""), body);
        for (String kv : opts.getOrDefault("--prop", List.of())) { // system properties allowed
            int i = kv.indexOf('=');
            if (i <= 0) throw new IllegalArgumentException("--prop wants K=V, got " + kv);
            MessageAccessor.putProperty(msg, kv.substring(0, i), kv.substring(i + 1));
        }
        SendResult r = producer(opt("--group", "rmqtool_producer")).send(msg);
        System.out.println(new Json().put("status", r.getSendStatus().name()).put("msgId", r.getMsgId())
            .put("offsetMsgId", r.getOffsetMsgId()).put("topic", topic)
            .put("brokerName", r.getMessageQueue().getBrokerName())
            .put("queueId", r.getMessageQueue().getQueueId()).put("queueOffset", r.getQueueOffset()));
        return r.getSendStatus() == SendStatus.SEND_OK ? 0 : 1;
    }

    private int maxOffset() throws Exception {
        String topic = req("--topic");
        int queue = (int) num("--queue", 0);
        MQClientAPIImpl api = api(producer("rmqtool_admin"));
        String[] b = brokerFor(api, topic);
        long max = api.getMaxOffset(b[0], new MessageQueue(topic, b[1], queue), 5000);
        System.out.println(new Json().put("topic", topic).put("queue", queue).put("broker", b[0]).put("maxOffset", max));
        return 0;
    }

    private int pull() throws Exception {
        String topic = req("--topic");
        MQClientAPIImpl api = api(producer("rmqtool_admin"));
        String[] b = brokerFor(api, topic);
        PullMessageRequestHeader h = new PullMessageRequestHeader();
        h.setConsumerGroup(opt("--group", "CID_RMQ_SYS_LMQ_PULL"));
        h.setTopic(topic);
        h.setQueueId((int) num("--queue", 0));
        h.setQueueOffset(num("--offset", 0));
        h.setMaxMsgNums((int) num("--max", 32));
        h.setSysFlag(PullSysFlag.buildSysFlag(false, false, true, false));
        h.setCommitOffset(0L);
        h.setSuspendTimeoutMillis(0L);
        h.setSubscription("*");
        h.setSubVersion(0L);
        h.setExpressionType("TAG");
        try {
            PullResult r = api.pullMessage(b[0], h, 10_000, CommunicationMode.SYNC, null);
            List<MessageExt> msgs = r instanceof PullResultExt x && x.getMessageBinary() != null
                ? MessageDecoder.decodes(ByteBuffer.wrap(x.getMessageBinary())) : List.of();
            System.out.println(new Json().put("status", r.getPullStatus().name()).put("code", 0)
                .put("nextBeginOffset", r.getNextBeginOffset()).put("minOffset", r.getMinOffset())
                .put("maxOffset", r.getMaxOffset()).put("count", msgs.size()));
            for (MessageExt m : msgs) System.out.println(messageJson(m));
        } catch (MQBrokerException e) { // e.g. 17 TOPIC_NOT_EXIST
            System.out.println(new Json().put("status", "ERROR").put("code", e.getResponseCode())
                .put("remark", e.getErrorMessage()));
        }
        return 0;
    }

    private int benchProduce() throws Exception {
        String topic = req("--topic");
        int threads = (int) num("--threads", 10), size = (int) num("--size", 100);
        long seconds = num("--seconds", 10), warmup = num("--warmup-seconds", 3);
        boolean lmq = opts.containsKey("--lmq");
        DefaultMQProducer p = producer(opt("--group", "rmqtool_bench"));
        byte[] body = new byte[size];
        Arrays.fill(body, (byte) 'x');
        java.util.function.Supplier<Message> mk = () -> {
            Message m = new Message(topic, "bench", body);
            if (lmq) MessageAccessor.putProperty(m, MessageConst.PROPERTY_INNER_MULTI_DISPATCH,
                MixAll.LMQ_PREFIX + topic + "%bench%");
            return m;
        };
        p.send(mk.get()); // route lookup, topic auto-creation, connections
        if (opts.containsKey("--inflight")) return benchProduceAsync(p, mk, (int) num("--inflight", 256), seconds, warmup, size, lmq);
        AtomicLong ok = new AtomicLong(), errors = new AtomicLong();
        long[][] lat = new long[threads][];
        long start = System.nanoTime() + warmup * 1_000_000_000L, end = start + seconds * 1_000_000_000L;
        Thread[] ts = new Thread[threads];
        for (int t = 0; t < threads; t++) {
            final int ti = t;
            ts[t] = new Thread(() -> {
                long[] l = new long[1 << 16];
                int n = 0;
                for (long t0; (t0 = System.nanoTime()) < end; ) {
                    boolean counted = t0 >= start; // not during the JIT warm-up
                    boolean good;
                    try {
                        good = p.send(mk.get()).getSendStatus() == SendStatus.SEND_OK;
                    } catch (Exception e) {
                        good = false;
                    }
                    if (!counted) continue;
                    (good ? ok : errors).incrementAndGet();
                    if (n == l.length) l = Arrays.copyOf(l, n * 2);
                    l[n++] = System.nanoTime() - t0;
                }
                lat[ti] = Arrays.copyOf(l, n);
            });
            ts[t].start();
        }
        for (Thread t : ts) t.join();
        double secs = (System.nanoTime() - start) / 1e9;
        long[] all = Arrays.stream(lat).flatMapToLong(Arrays::stream).sorted().toArray();
        Json j = new Json().put("msgs", ok.get()).put("seconds", Math.round(secs * 1000) / 1000.0)
            .put("rate", Math.round(ok.get() / secs)).put("errors", errors.get())
            .put("threads", threads).put("size", size).put("lmq", lmq);
        if (all.length > 0) j.put("p50_us", all[all.length / 2] / 1000).put("p99_us", all[(int) (all.length * 0.99)] / 1000);
        System.out.println(j);
        return errors.get() == 0 ? 0 : 1;
    }

    // The broker's intake with many sends in flight: one thread keeps N async sends going.
    private int benchProduceAsync(DefaultMQProducer p, java.util.function.Supplier<Message> mk, int inflight,
                                  long seconds, long warmup, int size, boolean lmq) throws Exception {
        java.util.concurrent.Semaphore slots = new java.util.concurrent.Semaphore(inflight);
        AtomicLong ok = new AtomicLong(), errors = new AtomicLong();
        long start = System.nanoTime() + warmup * 1_000_000_000L, end = start + seconds * 1_000_000_000L;
        while (System.nanoTime() < end) {
            slots.acquire();
            final boolean counted = System.nanoTime() >= start;
            try {
                p.send(mk.get(), new org.apache.rocketmq.client.producer.SendCallback() {
                    public void onSuccess(SendResult r) {
                        if (counted) (r.getSendStatus() == SendStatus.SEND_OK ? ok : errors).incrementAndGet();
                        slots.release();
                    }
                    public void onException(Throwable e) {
                        if (counted) errors.incrementAndGet();
                        slots.release();
                    }
                }, 10_000);
            } catch (Exception e) {
                if (counted) errors.incrementAndGet();
                slots.release();
            }
        }
        slots.acquire(inflight);
        double secs = (System.nanoTime() - start) / 1e9;
        System.out.println(new Json().put("msgs", ok.get()).put("seconds", Math.round(secs * 1000) / 1000.0)
            .put("rate", Math.round(ok.get() / secs)).put("errors", errors.get())
            .put("inflight", inflight).put("size", size).put("lmq", lmq));
        return errors.get() == 0 ? 0 : 1;
    }

    private int kv(boolean put) throws Exception {
        String ns = opt("--namespace", "LMQ"), key = req("--key"), v = null;
        MQClientAPIImpl api = api(producer("rmqtool_admin"));
        if (put) api.putKVConfigValue(ns, key, req("--value"), 5000);
        try {
            v = api.getKVConfigValue(ns, key, 5000);
        } catch (MQClientException e) {
            if (e.getResponseCode() != 22) throw e; // 22 QUERY_NOT_FOUND: absent
        }
        System.out.println(new Json().put("namespace", ns).put("key", key).put("value", v));
        return 0;
    }

    private int waitReady() throws Exception {
        long deadline = System.currentTimeMillis() + num("--timeout-ms", 60_000), answering = 0;
        String want = opt("--broker", opt("--broker-addr", null)), last = "";
        MQClientAPIImpl api = api(producer("rmqtool_admin"));
        boolean nudged = false;
        while (System.currentTimeMillis() < deadline) {
            try {
                // Upstream race: at start-up a broker registers only if its name server scan has
                // already finished, else 10 s later. A topic update makes it register at once.
                if (want != null && !nudged) {
                    try {
                        api.getMaxOffset(want, new MessageQueue("TBW102", "", 0), 1000);
                        if (answering == 0) answering = System.currentTimeMillis();
                    } catch (Exception e) {
                        answering = 0;
                    }
                    if (answering > 0 && System.currentTimeMillis() - answering > 1500) {
                        api.createTopic(want, "TBW102", new TopicConfig("rocketmq_sh_ready", 1, 1, 6), 3000);
                        nudged = true;
                    }
                }
                for (BrokerData b : api.getBrokerClusterInfo(3000).getBrokerAddrTable().values()) {
                    String addr = b.getBrokerAddrs().get(MixAll.MASTER_ID);
                    if (addr != null && (want == null || want.equals(addr))) {
                        System.out.println(new Json().put("ready", true).put("cluster", b.getCluster())
                            .put("brokerName", b.getBrokerName()).put("broker", addr));
                        return 0;
                    }
                }
                last = "broker not registered yet";
            } catch (Exception e) {
                last = e.toString();
            }
            Thread.sleep(250);
        }
        System.err.println("RmqTool: not ready: " + last);
        return 1;
    }

    // ------------------------------------------------------------------ JSON
    private static String messageJson(MessageExt m) {
        byte[] body = m.getBody() == null ? new byte[0] : m.getBody();
        Json props = new Json();
        new TreeMap<>(m.getProperties() == null ? Map.<String, String>of() : m.getProperties()).forEach(props::put);
        return new Json().put("topic", m.getTopic()).put("queueId", m.getQueueId())
            .put("queueOffset", m.getQueueOffset()).put("msgId", m.getMsgId())
            .put("keys", m.getKeys()).put("tags", m.getTags())
            .put("body_utf8", new String(body, StandardCharsets.UTF_8))
            .put("body_base64", Base64.getEncoder().encodeToString(body))
            .put("bornTimestamp", m.getBornTimestamp()).put("storeTimestamp", m.getStoreTimestamp())
            .put("properties", props).toString();
    }

    /** A JSON object: strings escaped, numbers/booleans/null/nested Json as they are. */
    private static final class Json {
        private final StringBuilder sb = new StringBuilder("{");

        Json put(String k, Object v) {
            if (sb.length() > 1) sb.append(',');
            str(k);
            sb.append(':');
            if (v == null || v instanceof Number || v instanceof Boolean || v instanceof Json) sb.append(v);
            else str(v.toString());
            return this;
        }

        private void str(String s) {
            sb.append('"');
            for (char c : s.toCharArray()) {
                switch (c) {
                    case '"' -> sb.append("\\\"");
                    case '\\' -> sb.append("\\\\");
                    case '\n' -> sb.append("\\n");
                    case '\r' -> sb.append("\\r");
                    case '\t' -> sb.append("\\t");
                    default -> sb.append(c < 0x20 ? String.format("\\u%04x", (int) c) : String.valueOf(c));
                }
            }
            sb.append('"');
        }

        @Override
        public String toString() {
            return sb + "}";
        }
    }
}
