// Prints the queue names, LMQ names, first-level topics, p2p peers and wildcard matches
// that Apache rocketmq-mqtt's own code gives a table of MQTT topic shapes, one
// tab-separated line each. Run against its jars (the interop suite does, and compares every
// line with cloud-bridge's lmq.rs):
//   java -cp 'tests/peers/cache/rocketmq-mqtt-6847f21/dist/lib/*' tests/peers/Names.java
import org.apache.rocketmq.mqtt.common.model.Trie;
import org.apache.rocketmq.mqtt.common.util.TopicUtils;
import java.util.Set;

public class Names {
  public static void main(String[] args) {
    String[] topics = {"t1", "t1/", "t1/a", "t1/a/", "/t1/a", "/t1/a/", "t1//a", "t1/a//", "t1//",
        "/t1", "t1/a/b", "t1/a/b/", "t1//b", "t1/p2p/c1", "t1/p2p/c1/x", "/t1/p2p/c1"};
    for (String t : topics) {
      // PublishProcessor.put: the queue; LmqQueueStoreManager.putMessage: the LMQ;
      // MessageUtil.toMessage: the first-level topic; WildcardManager: the p2p peer.
      String queue = TopicUtils.normalizeTopic(t);
      String first = TopicUtils.decode(queue).getFirstTopic();
      String lmq = "%LMQ%" + queue.replace("/", "%");
      String second = TopicUtils.normalizeSecondTopic(TopicUtils.decode(queue).getSecondTopic());
      String peer = TopicUtils.isP2P(second) ? TopicUtils.getP2Peer(TopicUtils.decode(queue), null) : "";
      System.out.println("topic\t" + t + "\t" + queue + "\t" + lmq + "\t" + first + "\t" + peer);
    }
    String[] filters = {"t1/+", "t1/+/", "t1/#", "t1/a/+", "t1/+/b", "t1//+", "t1/+//", "t1/a/#",
        "/t1/+", "t1/+/+"};
    for (String f : filters) {
      // MetaPersistManagerSample.refreshMeta normalizes a kvconfig wildcard;
      // WildcardManager.matchWildcards: Trie.getNodePath on the normalized topic.
      Trie<String, Integer> trie = new Trie<>();
      trie.addNode(TopicUtils.normalizeTopic(f), 0, "");
      StringBuilder line = new StringBuilder("filter\t" + f + "\t%LMQ%"
          + TopicUtils.normalizeTopic(f).replace("/", "%"));
      for (String t : topics) {
        if (TopicUtils.isP2P(TopicUtils.normalizeSecondTopic(TopicUtils.decode(TopicUtils.normalizeTopic(t)).getSecondTopic()))) {
          continue;
        }
        Set<String> matched = trie.getNodePath(TopicUtils.normalizeTopic(t));
        line.append("\t").append(t).append("=").append(matched.isEmpty() ? "-" : "%LMQ%" + matched.iterator().next().replace("/", "%"));
      }
      System.out.println(line);
    }
  }
}
