%%% @doc Ra's leader board, as far as clients of ExESDB use it.
-module(ra_leaderboard).
-export([lookup_leader/1]).

%% @doc `{ServerName, LeaderNode}' of the store's leader (Ra's server id), or `undefined'.
-spec lookup_leader(atom()) -> {atom(), node()} | undefined.
lookup_leader(Store) ->
    case testbed_store:leader_node(Store) of
        undefined -> undefined;
        Node -> {Store, Node}
    end.
