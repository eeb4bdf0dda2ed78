// A single OpenSearch node in one JVM, started from the jars on Maven Central with the
// modules the Elasticsearch sink needs (HTTP, _delete_by_query, painless scripts, the
// common analyzers). Arguments: <home dir> <http port>. Stops on SIGTERM.
//
// Requests must authenticate, as on a production cluster: HTTP basic with the user and
// password of the system properties `operators.user` / `operators.password`, or an API
// key `operators.api.key` (`id:secret`, sent as `ApiKey base64(id:secret)`). OpenSearch's
// security plugin is not published on Maven Central, so the check is this file's
// `RequireCredentials`: a REST handler wrapper that answers 401 with a
// `WWW-Authenticate` header, as the security plugin does, before OpenSearch sees the
// request.

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.Base64;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.function.UnaryOperator;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.client.node.NodeClient;
import org.opensearch.common.util.concurrent.ThreadContext;
import org.opensearch.core.rest.RestStatus;
import org.opensearch.common.settings.Settings;
import org.opensearch.index.reindex.ReindexPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.ActionPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.rest.BytesRestResponse;
import org.opensearch.rest.RestChannel;
import org.opensearch.rest.RestHandler;
import org.opensearch.rest.RestRequest;
import org.opensearch.transport.Netty4Plugin;

public final class OpenSearchNode {
    /** Node's plugin-taking constructor is protected: the test framework's MockNode does the same. */
    private static final class PluginNode extends Node {
        PluginNode(Settings settings, Collection<Class<? extends Plugin>> plugins) {
            super(InternalSettingsPreparer.prepareEnvironment(settings, Collections.emptyMap(), null, () -> "node-1"),
                plugins, true);
        }
    }

    /** 401 for requests without the node's credentials. */
    public static final class RequireCredentials extends Plugin implements ActionPlugin {
        private static final byte[] BASIC = expected("Basic ", System.getProperty("operators.user", "") + ":"
            + System.getProperty("operators.password", ""));
        private static final byte[] API_KEY = expected("ApiKey ", System.getProperty("operators.api.key", ""));

        private static byte[] expected(String scheme, String secret) {
            String encoded = Base64.getEncoder().encodeToString(secret.getBytes(StandardCharsets.UTF_8));
            return (scheme + encoded).getBytes(StandardCharsets.UTF_8);
        }

        static boolean authorized(String header) {
            if (header == null) {
                return false;
            }
            byte[] given = header.trim().getBytes(StandardCharsets.UTF_8);
            // Constant-time comparison, as a credential check should be.
            return MessageDigest.isEqual(given, BASIC) || MessageDigest.isEqual(given, API_KEY);
        }

        @Override
        public UnaryOperator<RestHandler> getRestHandlerWrapper(ThreadContext threadContext) {
            return inner -> new RestHandler() {
                @Override
                public void handleRequest(RestRequest request, RestChannel channel, NodeClient client) throws Exception {
                    if (authorized(request.header("Authorization"))) {
                        inner.handleRequest(request, channel, client);
                        return;
                    }
                    String reason = request.header("Authorization") == null
                        ? "missing authentication credentials for REST request [" + request.uri() + "]"
                        : "unable to authenticate with the provided credentials for REST request [" + request.uri() + "]";
                    BytesRestResponse response = new BytesRestResponse(RestStatus.UNAUTHORIZED, "application/json",
                        "{\"error\":{\"type\":\"security_exception\",\"reason\":\"" + reason.replace("\"", "'")
                            + "\"},\"status\":401}");
                    response.addHeader("WWW-Authenticate", "Basic realm=\"OpenSearch Security\"");
                    channel.sendResponse(response);
                }

                @Override
                public boolean canTripCircuitBreaker() {
                    return inner.canTripCircuitBreaker();
                }

                @Override
                public boolean supportsContentStream() {
                    return inner.supportsContentStream();
                }

                @Override
                public boolean supportsStreaming() {
                    return inner.supportsStreaming();
                }

                @Override
                public boolean allowsUnsafeBuffers() {
                    return inner.allowsUnsafeBuffers();
                }

                @Override
                public boolean allowSystemIndexAccessByDefault() {
                    return inner.allowSystemIndexAccessByDefault();
                }

                @Override
                public boolean isActionPaginated() {
                    return inner.isActionPaginated();
                }
            };
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: OpenSearchNode <home dir> <http port>");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);
        Settings settings = Settings.builder()
            .put("cluster.name", "operators-test")
            .put("node.name", "node-1")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", port)
            .put("transport.port", port + 100)
            // The tests fill and empty many small indices; disk watermarks would make a
            // nearly full test disk look like a cluster fault.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("indices.breaker.total.use_real_memory", false)
            .build();
        Node node = new PluginNode(settings,
            List.of(Netty4Plugin.class, ReindexPlugin.class, PainlessPlugin.class, CommonAnalysisPlugin.class,
                RequireCredentials.class));
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (Exception e) {
                e.printStackTrace();
            }
            stopped.countDown();
        }));
        node.start();
        System.out.println("OpenSearch node started on 127.0.0.1:" + port);
        System.out.flush();
        stopped.await();
    }
}
