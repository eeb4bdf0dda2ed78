// HDFS for the tests: Hadoop's MiniDFSCluster, a NameNode and one DataNode in one JVM,
// every port on 127.0.0.1, permissions off (tests write anywhere), replication 1.
// Arguments: <dir> <namenode rpc port> <namenode http port> <datanode port>
// <datanode http port> <datanode ipc port>. Stops on SIGTERM.
//
// <dir>/data holds the cluster's storage: formatted on the first start, kept across
// restarts after that (delete the directory for an empty file system). <dir>/conf gets
// the core-site.xml and hdfs-site.xml a client reads through HADOOP_CONF_DIR. The line
// "READY hdfs://127.0.0.1:<port>" on stdout says the NameNode is out of safe mode, the
// DataNode registered and a file was written and read back.

import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;
import java.util.concurrent.CountDownLatch;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.hdfs.DistributedFileSystem;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.util.ShutdownHookManager;

public final class HdfsCluster {
    public static void main(String[] args) throws Exception {
        try {
            run(args);
        } catch (Throwable e) {
            // The cluster's threads would keep a half-started JVM alive: exit, so that
            // hdfs.sh sees the failure at once (the shutdown hook stops what started).
            e.printStackTrace();
            System.exit(1);
        }
    }

    private static void run(String[] args) throws Exception {
        if (args.length != 6) {
            System.err.println("usage: HdfsCluster <dir> <namenode rpc port> <namenode http port> "
                + "<datanode port> <datanode http port> <datanode ipc port>");
            System.exit(2);
        }
        Path dir = Path.of(args[0]).toAbsolutePath();
        int rpcPort = Integer.parseInt(args[1]);
        int httpPort = Integer.parseInt(args[2]);
        String dnAddress = "127.0.0.1:" + Integer.parseInt(args[3]);
        String dnHttpAddress = "127.0.0.1:" + Integer.parseInt(args[4]);
        String dnIpcAddress = "127.0.0.1:" + Integer.parseInt(args[5]);
        Path data = dir.resolve("data");
        // Written once a first start got as far as READY: a start interrupted before
        // that formats again (MiniDFSCluster then empties <dir>/data).
        Path formatted = data.resolve(".formatted");
        boolean format = !Files.exists(formatted);
        String url = "hdfs://127.0.0.1:" + rpcPort;

        Configuration conf = new HdfsConfiguration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, data.toString());
        conf.set("hadoop.tmp.dir", data.resolve("tmp").toString());
        conf.setBoolean("dfs.permissions.enabled", false);
        conf.setInt("dfs.replication", 1);
        conf.setInt("dfs.namenode.safemode.extension", 0);
        // MiniDFSCluster binds the NameNode's RPC and HTTP to 127.0.0.1 itself; the
        // DataNode's addresses are taken from here (checkDataNodeAddrConfig) and it
        // registers as 127.0.0.1, so WebHDFS redirects and block locations name loopback.
        conf.set("dfs.datanode.address", dnAddress);
        conf.set("dfs.datanode.http.address", dnHttpAddress);
        conf.set("dfs.datanode.ipc.address", dnIpcAddress);
        conf.set("dfs.datanode.https.address", "127.0.0.1:0");
        conf.set("dfs.datanode.hostname", "127.0.0.1");
        conf.set("dfs.namenode.https-address", "127.0.0.1:0");
        conf.set("dfs.namenode.secondary.http-address", "127.0.0.1:0");
        conf.set("dfs.namenode.secondary.https-address", "127.0.0.1:0");
        conf.setBoolean("dfs.client.use.datanode.hostname", false);
        conf.setBoolean("dfs.datanode.use.datanode.hostname", false);
        conf.setBoolean("dfs.webhdfs.enabled", true);

        MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf)
            .nameNodePort(rpcPort)
            .nameNodeHttpPort(httpPort)
            .numDataNodes(1)
            .storagesPerDatanode(1)
            .checkDataNodeAddrConfig(true)
            .checkDataNodeHostConfig(true)
            .format(format)
            .build();

        CountDownLatch stopped = new CountDownLatch(1);
        // Through Hadoop's hook manager, ahead of its FileSystem cache (priority 10).
        ShutdownHookManager.get().addShutdownHook(() -> {
            try {
                cluster.shutdown();
            } catch (Exception e) {
                e.printStackTrace();
            }
            stopped.countDown();
        }, 100);

        cluster.waitActive();
        DistributedFileSystem fs = cluster.getFileSystem();
        long deadline = System.currentTimeMillis() + 120_000;
        while (fs.isInSafeMode()) {
            if (System.currentTimeMillis() > deadline) {
                throw new IllegalStateException("the NameNode stayed in safe mode for 120 s");
            }
            Thread.sleep(200);
        }
        probe(fs);

        writeClientConfig(dir.resolve("conf"), url, httpPort);
        if (format) {
            Files.writeString(formatted, url + "\n");
        }
        System.out.println("READY " + url);
        System.out.flush();
        stopped.await();
    }

    /** A write through the DataNode and a read back: what a test does first. */
    private static void probe(DistributedFileSystem fs) throws IOException {
        org.apache.hadoop.fs.Path path = new org.apache.hadoop.fs.Path("/.hdfs-sh-ready-probe");
        byte[] bytes = "ready".getBytes(StandardCharsets.UTF_8);
        try (FSDataOutputStream out = fs.create(path, true)) {
            out.write(bytes);
        }
        byte[] back = new byte[bytes.length];
        try (FSDataInputStream in = fs.open(path)) {
            in.readFully(back);
        }
        fs.delete(path, false);
        if (!Arrays.equals(bytes, back)) {
            throw new IllegalStateException("the probe file read back differently");
        }
    }

    /** core-site.xml and hdfs-site.xml for HADOOP_CONF_DIR. */
    private static void writeClientConfig(Path confDir, String url, int httpPort) throws IOException {
        Files.createDirectories(confDir);
        Configuration core = new Configuration(false);
        core.set("fs.defaultFS", url);
        write(core, confDir.resolve("core-site.xml"));
        Configuration hdfs = new Configuration(false);
        hdfs.set("dfs.namenode.rpc-address", url.substring("hdfs://".length()));
        hdfs.set("dfs.namenode.http-address", "127.0.0.1:" + httpPort);
        hdfs.set("dfs.replication", "1");
        // The DataNode registers as 127.0.0.1: its address, not a host name to resolve.
        hdfs.set("dfs.client.use.datanode.hostname", "false");
        hdfs.set("dfs.permissions.enabled", "false");
        hdfs.set("dfs.webhdfs.enabled", "true");
        write(hdfs, confDir.resolve("hdfs-site.xml"));
    }

    private static void write(Configuration conf, Path file) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        try (OutputStream out = Files.newOutputStream(tmp)) {
            conf.writeXml(out);
        }
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }
}
