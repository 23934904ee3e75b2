function facestream_subscriber(endpoint, nFrames)
% FACESTREAM_SUBSCRIBER  Read facestream's stream in MATLAB, newest frame only.
%
%   facestream_subscriber('tcp://127.0.0.1:5555', 500)
%
% Needs: the pipeline started with JSON payloads (MATLAB has no msgpack decoder built in),
%     facestream run --encoding json
% and JeroMQ, ZeroMQ in pure Java (the jar from Maven Central, org.zeromq:jeromq), on
% MATLAB's Java class path:
%     javaaddpath('jeromq-0.6.0.jar')
% jsondecode needs R2016b or newer.
%
% Each frame's age is java.lang.System.nanoTime() minus t_capture_ns: on Linux both are
% CLOCK_MONOTONIC, so this holds on the pipeline's own host only. t_*_ns values become doubles
% (exact while the host has been up for less than 104 days).
if nargin < 1, endpoint = 'tcp://127.0.0.1:5555'; end
if nargin < 2, nFrames = 100; end
import org.zeromq.*

ctx = ZContext();
cleanup = onCleanup(@() ctx.close());
sub = ctx.createSocket(SocketType.SUB);
sub.subscribe(uint8('frame'));
sub.subscribe(uint8('meta'));
sub.connect(endpoint);

meta = [];
skipped = 0;
for n = 1:nFrames
    payload = [];
    topic = char(sub.recvStr());            % blocks for the first message
    while true
        body = sub.recv();                  % the message's second part
        if strcmp(topic, 'meta')
            meta = decode(body);            % always the newest meta at hand
        else
            if ~isempty(payload), skipped = skipped + 1; end
            payload = body;                 % keep only the newest frame
        end
        next = sub.recvStr(ZMQ.DONTWAIT);   % drain what else has arrived, without waiting
        if isempty(next)
            if ~isempty(payload), break; end
            next = sub.recvStr();           % only meta so far: wait for a frame
        end
        topic = char(next);
    end
    msg = decode(payload);
    keypoints = msg.keypoints;              % 15 x 3: x, y, likelihood (meta.bodyparts order)
    neural = msg.neural;                    % predicted activity
    ageMs = (double(java.lang.System.nanoTime()) - msg.t_capture_ns) / 1e6;
    fprintf('frame %d  nose tip (%.1f, %.1f)  neural(1) %+.3f  %.1f ms old  (%d skipped)\n', ...
        msg.frame_id, keypoints(9, 1), keypoints(9, 2), neural(1), ageMs, skipped);
    % your stimulus logic here
end
if ~isempty(meta), fprintf('pipeline status: %s\n', meta.status); end
end

function msg = decode(bytes)
msg = jsondecode(native2unicode(typecast(bytes(:)', 'uint8'), 'UTF-8'));
end
