// Prints the producers the broker knows as active writers of each given partition, one line
// each: "producer <topic> <partition> <producer id> <epoch> <last sequence>". The broker keeps
// producer state only for idempotent (or transactional) producers, so a partition written by a
// plain producer prints nothing. Run with Java's source launcher and the broker jars:
//   java -cp '<libs>/*' DescribeProducers.java <bootstrap> <topic>:<partition> ...
// (tests/test_worker_idempotence.py; Kafka's own Admin client, KIP-664 DescribeProducers).

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeProducersResult.PartitionProducerState;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.common.TopicPartition;

public class DescribeProducers {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        List<TopicPartition> partitions = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            int colon = args[i].lastIndexOf(':');
            partitions.add(new TopicPartition(
                args[i].substring(0, colon), Integer.parseInt(args[i].substring(colon + 1))));
        }
        try (Admin admin = Admin.create(props)) {
            Map<TopicPartition, PartitionProducerState> states =
                admin.describeProducers(partitions).all().get();
            for (Map.Entry<TopicPartition, PartitionProducerState> entry : states.entrySet()) {
                for (ProducerState producer : entry.getValue().activeProducers()) {
                    System.out.println("producer " + entry.getKey().topic() + " "
                        + entry.getKey().partition() + " " + producer.producerId() + " "
                        + producer.producerEpoch() + " " + producer.lastSequence());
                }
            }
        }
    }
}
